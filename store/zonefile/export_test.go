package zonefile

// SetLimits sets the record count and data size limits of Parse until the
// returned function restores them. Not for parallel tests.
func SetLimits(records, data int) (restore func()) {
	r, d := maxRecords, maxData
	maxRecords, maxData = records, data
	return func() { maxRecords, maxData = r, d }
}
