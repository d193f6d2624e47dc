package cow

import (
	"strconv"
	"sync"
	"testing"
)

func TestMap(t *testing.T) {
	m := New[int]()
	m.Replace(map[string]int{"a": 1, "b": 2})
	m.Set("c", 3)
	m.Set("a", 10)
	if !m.Delete("b") || m.Delete("b") {
		t.Fatal("Delete of b: want true once, then false")
	}
	if v, ok := m.Get("a"); !ok || v != 10 {
		t.Fatalf("a = %d %v", v, ok)
	}
	if _, ok := m.Get("b"); ok {
		t.Fatal("b still there")
	}
	got := map[string]int{}
	m.Range(func(k string, v int) { got[k] = v })
	if len(got) != 2 || got["a"] != 10 || got["c"] != 3 || m.Len() != 2 {
		t.Fatalf("content %v, Len %d", got, m.Len())
	}
	m.Replace(map[string]int{"z": 26})
	if _, ok := m.Get("a"); ok || m.Len() != 1 {
		t.Fatal("Replace kept old entries")
	}
}

// TestConcurrent: readers never see a torn value while a writer works (run
// with -race).
func TestConcurrent(t *testing.T) {
	m := New[int]()
	var wg sync.WaitGroup
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				if v, ok := m.Get(strconv.Itoa(i % 100)); ok && v != i%100 {
					t.Errorf("key %d has %d", i%100, v)
					return
				}
			}
		}()
	}
	for i := 0; i < 100; i++ {
		m.Set(strconv.Itoa(i), i)
	}
	wg.Wait()
	if m.Len() != 100 {
		t.Fatalf("Len %d, want 100", m.Len())
	}
}
