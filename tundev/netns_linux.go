package tundev

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsPath turns Config.Netns into a path: bare names live in /run/netns.
func netnsPath(s string) string {
	if s == "" || strings.ContainsRune(s, '/') {
		return s
	}
	return "/run/netns/" + s
}

// openNetns opens the namespace named by Config.Netns. An empty string
// yields netns.None(), meaning "the current namespace". The handle is
// checked to really be a network namespace.
func openNetns(s string) (netns.NsHandle, error) {
	if s == "" {
		return netns.None(), nil
	}
	path := netnsPath(s)
	h, err := netns.GetFromPath(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return netns.None(), fmt.Errorf("tundev: netns %s: %w: %w", path, ErrNoNetns, err)
		}
		return netns.None(), wrapSys("open netns", path, err)
	}
	typ, err := unix.IoctlRetInt(int(h), unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWNET {
		h.Close()
		if err == nil {
			err = fmt.Errorf("namespace type %#x", typ)
		}
		return netns.None(), fmt.Errorf("tundev: netns %s: %w: not a network namespace: %w", path, ErrNoNetns, err)
	}
	return h, nil
}

// inNetns runs fn with the calling code's thread inside ns. For
// netns.None() fn runs directly on the caller's goroutine.
//
// Otherwise fn runs on a fresh goroutine that locks its OS thread, enters
// ns and, after fn, returns to the original namespace before unlocking. If
// any switch fails the thread is left locked: when the goroutine ends the Go
// runtime then destroys the thread instead of reusing it, so no other
// goroutine can ever run in the wrong namespace. fn must not start
// goroutines that depend on the namespace.
func inNetns(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("tundev: get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			// setns failed, so the thread did not move; it is still
			// safe to hand back.
			runtime.UnlockOSThread()
			errc <- wrapSys("enter netns", ns.String(), err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Thread stays locked and dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("tundev: return to original netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
