package devstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
)

// ports are the loopback ports of the services. They are chosen on the
// first start and kept in DIR/state.json: key references in sealed objects
// name the vault's host:port, so it must not change across restarts.
type ports struct {
	MAA     int `json:"maa"`
	Vault   int `json:"vault"`
	IMDS    int `json:"imds"`
	Entra   int `json:"entra"`
	Azurite int `json:"azurite"`
}

func loadPorts(dir string) (ports, error) {
	path := filepath.Join(dir, "state.json")
	var p ports
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &p); err != nil {
			return p, fmt.Errorf("%s: %w", path, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return p, err
	}
	for _, f := range []*int{&p.MAA, &p.Vault, &p.IMDS, &p.Entra, &p.Azurite} {
		if *f == 0 {
			if *f, err = freePort(); err != nil {
				return p, err
			}
		}
	}
	b, _ = json.MarshalIndent(p, "", "  ")
	return p, os.WriteFile(path, b, 0o644)
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// listen binds a persisted port, with a clear error when it is taken.
func listen(port int, what string) (net.Listener, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("devstack %s: port %d (kept in state.json so key references stay valid) is busy: %w", what, port, err)
	}
	return l, nil
}
