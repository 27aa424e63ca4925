package localdir

// SetNoOpenat2 makes stores use the openat(2) walk of kernels without
// openat2(2), and returns a function that restores the previous state.
func SetNoOpenat2(v bool) func() {
	old := noOpenat2.Swap(v)
	return func() { noOpenat2.Store(old) }
}

// SetProcFD chooses whether s reads metadata through /proc/self/fd.
func (s *Store) SetProcFD(v bool) { s.procFD = v }
