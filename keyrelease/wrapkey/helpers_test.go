package wrapkey

import (
	"crypto"
	"encoding/base64"
)

func sha256New() crypto.Hash { return crypto.SHA256 }
func b64(b []byte) string    { return base64.RawURLEncoding.EncodeToString(b) }
