package fakecvm

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"

	"github.com/google/go-tpm/tpm2"
)

// swtpm serves one connection at a time, and has no resource manager. The
// devstack puts this small one in front of it, as the kernel's
// /dev/tpmrm0 is in front of a real TPM: many clients (the mount, `skrfs
// attest`, `skrfs explain`), one command at a time, and the transient
// objects a client created are flushed when it disconnects.
type proxy struct {
	l  net.Listener
	mu sync.Mutex // one command at a time on up
	up net.Conn
}

func newProxy(upstream string) (*proxy, error) {
	up, err := net.DialTimeout("tcp", upstream, 5*time.Second)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		up.Close()
		return nil, err
	}
	p := &proxy{l: l, up: up}
	go p.serve()
	return p, nil
}

func (p *proxy) addr() string { return p.l.Addr().String() }

func (p *proxy) close() {
	p.l.Close()
	p.mu.Lock()
	p.up.Close()
	p.mu.Unlock()
}

func (p *proxy) serve() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		go p.client(c)
	}
}

func readMsg(r io.Reader) ([]byte, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[2:6])
	if n < 10 || n > 1<<16 {
		return nil, io.ErrUnexpectedEOF
	}
	b := make([]byte, n)
	copy(b, hdr)
	_, err := io.ReadFull(r, b[10:])
	return b, err
}

func (p *proxy) roundTrip(cmd []byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.up.Write(cmd); err != nil {
		return nil, err
	}
	return readMsg(p.up)
}

func (p *proxy) client(c net.Conn) {
	defer c.Close()
	owned := map[uint32]bool{}
	defer func() {
		for h := range owned {
			cmd := make([]byte, 14) // TPM2_FlushContext, no sessions
			binary.BigEndian.PutUint16(cmd[0:], uint16(tpm2.TPMSTNoSessions))
			binary.BigEndian.PutUint32(cmd[2:], 14)
			binary.BigEndian.PutUint32(cmd[6:], uint32(tpm2.TPMCCFlushContext))
			binary.BigEndian.PutUint32(cmd[10:], h)
			p.roundTrip(cmd)
		}
	}()
	for {
		cmd, err := readMsg(c)
		if err != nil {
			return
		}
		rsp, err := p.roundTrip(cmd)
		if err != nil {
			return
		}
		cc := binary.BigEndian.Uint32(cmd[6:10])
		ok := binary.BigEndian.Uint32(rsp[6:10]) == 0
		switch {
		// Transient objects only: the TPM never flushes them by itself
		// (sessions it may, and their handles are then reused).
		case ok && (cc == uint32(tpm2.TPMCCCreatePrimary) || cc == uint32(tpm2.TPMCCLoad)) && len(rsp) >= 14:
			owned[binary.BigEndian.Uint32(rsp[10:14])] = true
		case ok && cc == uint32(tpm2.TPMCCFlushContext) && len(cmd) >= 14:
			delete(owned, binary.BigEndian.Uint32(cmd[10:14]))
		}
		if _, err := c.Write(rsp); err != nil {
			return
		}
	}
}
