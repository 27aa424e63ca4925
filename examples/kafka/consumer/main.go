// Command consumer is the confidential side of the skrfs Kafka example. It
// reads encrypted messages from a Kafka topic and decrypts them with an
// RSA private key read from a file, and shows them on a web page. It has no
// attestation or Key Vault code: in a confidential pod the file is
// skrfs's keys/<name>, released to the attested TEE on first open; anywhere
// else the file does not exist (or cannot be released) and the page shows
// only ciphertext.
//
//	consumer --brokers kafka:9092 --topic kafka-demo-topic --key /skrfs/keys/kafka-demo --listen :3333
package main

import (
	"context"
	"crypto/rsa"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/skrfs/skrfs/examples/kafka/kafkademo"
)

func main() {
	log := zerolog.New(os.Stderr).With().Timestamp().Str("app", "consumer").Logger()
	if err := run(os.Args[1:], os.Stdout, log); err != nil {
		log.Error().Err(err).Msg("consumer failed")
		os.Exit(1)
	}
}

// message is one received message as shown: decrypted, or the ciphertext
// and why it could not be decrypted.
type message struct {
	Offset    int64
	Plaintext string
	Encrypted string
	Why       string
}

// board holds the last messages and the key, loaded on first success.
type board struct {
	keyFile string
	mu      sync.Mutex
	key     *rsa.PrivateKey
	msgs    []message
}

const keep = 50

// decrypt turns a record value into a message. Until the key file can be
// read, it retries at every message, so decryption starts as soon as the
// mount is up and the key released.
func (b *board) decrypt(offset int64, value string) message {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := message{Offset: offset}
	if b.key == nil {
		raw, err := os.ReadFile(b.keyFile)
		if err == nil {
			b.key, err = kafkademo.ParsePrivateKey(raw)
			clear(raw)
		}
		if err != nil {
			m.Encrypted, m.Why = value, "no private key: "+err.Error()
			return m
		}
	}
	pt, err := kafkademo.Open(b.key, value)
	if err != nil {
		m.Encrypted, m.Why = value, err.Error()
		return m
	}
	m.Plaintext = string(pt)
	return m
}

func (b *board) add(m message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, m)
	if len(b.msgs) > keep {
		b.msgs = b.msgs[len(b.msgs)-keep:]
	}
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2"><title>Kafka consumer</title>
<style>body{font-family:sans-serif} td{padding:2px 8px;vertical-align:top} .ct{font-family:monospace;word-break:break-all;color:#a00}</style>
</head><body><h1>Messages from {{.Topic}}</h1>
<p>Private key: <code>{{.KeyFile}}</code></p>
<table>{{range .Msgs}}<tr><td>{{.Offset}}</td>{{if .Plaintext}}<td>{{.Plaintext}}</td>{{else}}<td class="ct">{{.Encrypted}}<br><i>{{.Why}}</i></td>{{end}}</tr>
{{else}}<tr><td>no messages yet</td></tr>{{end}}</table></body></html>
`))

func (b *board) handler(topic string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		msgs := make([]message, len(b.msgs))
		for i, m := range b.msgs {
			msgs[len(msgs)-1-i] = m // newest first
		}
		b.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		page.Execute(w, map[string]any{"Topic": topic, "KeyFile": b.keyFile, "Msgs": msgs})
	})
}

func run(args []string, stdout io.Writer, log zerolog.Logger) error {
	fl := flag.NewFlagSet("consumer", flag.ContinueOnError)
	brokers := fl.String("brokers", "localhost:9092", "comma-separated Kafka bootstrap brokers")
	topic := fl.String("topic", "kafka-demo-topic", "topic to read from the beginning")
	keyFile := fl.String("key", "", "PEM file of the RSA private key, e.g. /skrfs/keys/kafka-demo (required)")
	listen := fl.String("listen", "", "serve the web page on this address, e.g. :3333")
	count := fl.Int("count", 0, "exit after this many messages (0: until SIGTERM)")
	printMsgs := fl.Bool("print", false, "also print each message to stdout (plaintext, or ciphertext when it cannot be decrypted)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("--key is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	b := &board{keyFile: *keyFile}
	if *listen != "" {
		srv := &http.Server{Addr: *listen, Handler: b.handler(*topic), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error().Err(err).Msg("web page")
				stop()
			}
		}()
		defer srv.Close()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...), kgo.ConsumeTopics(*topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation())
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := 0
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		for _, fe := range fetches.Errors() {
			log.Warn().Err(fe.Err).Str("topic", fe.Topic).Int32("partition", fe.Partition).Msg("fetch")
		}
		var done bool
		fetches.EachRecord(func(r *kgo.Record) {
			if done {
				return
			}
			m := b.decrypt(r.Offset, string(r.Value))
			b.add(m)
			log.Info().Int64("offset", r.Offset).Bool("decrypted", m.Plaintext != "").Msg("message")
			if *printMsgs {
				if m.Plaintext != "" {
					fmt.Fprintf(stdout, "plaintext\t%s\n", m.Plaintext)
				} else {
					fmt.Fprintf(stdout, "ciphertext\t%s\t(%s)\n", m.Encrypted, m.Why)
				}
			}
			seen++
			done = *count > 0 && seen >= *count
		})
		if done {
			return nil
		}
	}
}
