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
	MAA   int `json:"maa"`
	Vault int `json:"vault"`
	IMDS  int `json:"imds"`
	Entra int `json:"entra"`
}

// bindPorts binds the services' loopback listeners, keyed by service name:
// on the ports kept in DIR/state.json when there is one (a taken port is
// then a clear error), else on ports the kernel picks, which are then kept.
// Binding before recording avoids the race of choosing a free port and
// binding it later, when another process may have taken it meanwhile.
func bindPorts(dir string) (ports, map[string]net.Listener, error) {
	path := filepath.Join(dir, "state.json")
	var p ports
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &p); err != nil {
			return p, nil, fmt.Errorf("%s: %w", path, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return p, nil, err
	}
	ls := map[string]net.Listener{}
	closeAll := func() {
		for _, l := range ls {
			l.Close()
		}
	}
	for _, f := range []struct {
		name string
		port *int
	}{{ServiceMAA, &p.MAA}, {ServiceVault, &p.Vault}, {ServiceIMDS, &p.IMDS}, {ServiceEntra, &p.Entra}} {
		l, err := listen(*f.port, f.name)
		if err != nil {
			closeAll()
			return p, nil, err
		}
		ls[f.name] = l
		*f.port = l.Addr().(*net.TCPAddr).Port
	}
	b, _ = json.MarshalIndent(p, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		closeAll()
		return p, nil, err
	}
	return p, ls, nil
}

// listen binds a loopback port (0: any free one), with a clear error when
// a kept port is taken.
func listen(port int, what string) (net.Listener, error) {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return nil, fmt.Errorf("devstack %s: port %d (kept in state.json so key references stay valid) is busy: %w", what, port, err)
	}
	return l, nil
}
