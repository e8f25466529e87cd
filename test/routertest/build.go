package routertest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
)

// routerPkg is the router's main package.
const routerPkg = "github.com/tunrouter/router/cmd/router"

// GoTool returns the go command: the one in PATH, else the one of the
// toolchain that built the test (a root shell's PATH may lack it).
func GoTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// Build builds cmd/router into dir/router and returns its path. It needs
// a working directory inside the module, as a test binary run by go test
// has (its package's directory).
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "router")
	if out, err := exec.Command(GoTool(), "build", "-o", bin, routerPkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/router: %v\n%s", err, out)
	}
	return bin, nil
}
