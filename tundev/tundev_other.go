//go:build !linux

package tundev

import (
	"fmt"
	"runtime"

	"golang.zx2c4.com/wireguard/tun"
)

// Offloads reports which offloads are in effect on a device. On this
// operating system there is never a device.
type Offloads struct {
	VNetHdr, Checksum, TSO4, TSO6, USO bool
}

// Device is an open TUN device. On this operating system Open always
// fails, so a Device is never returned.
type Device struct{}

// Open fails with ErrUnsupported: the package is Linux only.
func Open(cfg Config) (*Device, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("tundev: %w (GOOS=%s)", ErrUnsupported, runtime.GOOS)
}

// Preflight reports that TUN devices are unsupported here.
func Preflight(netns string) Report {
	return Report{Checks: []Check{{Name: "os", Status: CheckFail,
		Detail: "GOOS=" + runtime.GOOS + ": " + ErrUnsupported.Error()}}}
}

func (d *Device) Name() string                  { return "" }
func (d *Device) Index() int                    { return 0 }
func (d *Device) Created() bool                 { return false }
func (d *Device) Queues() []tun.Device          { return nil }
func (d *Device) BatchSize() int                { return 1 }
func (d *Device) MTU() (int, error)             { return 0, ErrUnsupported }
func (d *Device) LinkStats() (LinkStats, error) { return LinkStats{}, ErrUnsupported }
func (d *Device) Offloads() (Offloads, error)   { return Offloads{}, ErrUnsupported }
func (d *Device) Events() <-chan Event          { return nil }
func (d *Device) Close() error                  { return nil }
