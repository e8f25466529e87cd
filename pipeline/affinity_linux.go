package pipeline

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// pinToCPU locks the calling goroutine to its OS thread and that thread to
// one CPU (worker i on CPU i modulo the CPUs the process may use).
func pinToCPU(i int) {
	runtime.LockOSThread()
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return
	}
	n := allowed.Count()
	if n == 0 {
		return
	}
	k := i % n
	for cpu := 0; cpu < 1024; cpu++ {
		if allowed.IsSet(cpu) {
			if k == 0 {
				var set unix.CPUSet
				set.Set(cpu)
				unix.SchedSetaffinity(0, &set)
				return
			}
			k--
		}
	}
}
