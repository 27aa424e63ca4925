// Package wrapkey holds the ephemeral RSA wrapping key of one Secure Key
// Release (protocol.md section 4): it generates the key and the exact
// runtime data that binds it into the attestation, and unwraps the key
// Key Vault releases to it (CKM_RSA_AES_KEY_WRAP and the SHA-256/384
// variants, section 5.5).
package wrapkey
