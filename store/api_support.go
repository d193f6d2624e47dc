package store

import "context"

// ZonesData reads the named zones with their records, each consistently,
// in batches (one round trip per batch, not per zone). Zones that do not
// exist (deleted meanwhile) are left out. For the API's zone lists.
func (s *Store) ZonesData(ctx context.Context, names []string) ([]ZoneData, error) {
	out := make([]ZoneData, 0, len(names))
	const batch = 500
	for i := 0; i < len(names); i += batch {
		zs, err := s.readZones(ctx, names[i:min(i+batch, len(names))])
		if err != nil {
			return nil, err
		}
		for _, z := range zs {
			if z != nil {
				out = append(out, *z)
			}
		}
	}
	return out, nil
}
