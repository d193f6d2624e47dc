package courier

// CheckGroups is checkGroups, for the tests of package courier_test.
var CheckGroups = checkGroups

// EachMode is eachMode, for the tests of package courier_test.
var EachMode = eachMode
