// Command producer is the ordinary (non-confidential) side of the skrfs
// Kafka example: it encrypts each message with the RSA public key of a Key
// Vault key and publishes it, base64-encoded, to a Kafka topic. It needs
// no secret: the public key can be downloaded by anyone allowed to read
// the key's metadata.
//
//	producer --brokers kafka:9092 --topic kafka-demo-topic --pubkey kafka-demo.pub.pem --count 0
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/skrfs/skrfs/examples/kafka/kafkademo"
)

func main() {
	log := zerolog.New(os.Stderr).With().Timestamp().Str("app", "producer").Logger()
	if err := run(os.Args[1:], log); err != nil {
		log.Error().Err(err).Msg("producer failed")
		os.Exit(1)
	}
}

func run(args []string, log zerolog.Logger) error {
	fl := flag.NewFlagSet("producer", flag.ContinueOnError)
	brokers := fl.String("brokers", "localhost:9092", "comma-separated Kafka bootstrap brokers")
	topic := fl.String("topic", "kafka-demo-topic", "topic to publish to")
	pubFile := fl.String("pubkey", "", "PEM file of the RSA public key (required)")
	msg := fl.String("message", "Azure Confidential Computing", "message text; each message gets a sequence number")
	count := fl.Int("count", 0, "number of messages (0: until SIGTERM)")
	interval := fl.Duration("interval", time.Second, "pause between messages")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if *pubFile == "" {
		return errors.New("--pubkey is required")
	}
	b, err := os.ReadFile(*pubFile)
	if err != nil {
		return err
	}
	pub, err := kafkademo.ParsePublicKey(b)
	if err != nil {
		return fmt.Errorf("%s: %w", *pubFile, err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*brokers, ",")...), kgo.DefaultProduceTopic(*topic),
		kgo.AllowAutoTopicCreation())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	for i := 1; *count == 0 || i <= *count; i++ {
		value, err := kafkademo.Seal(pub, fmt.Appendf(nil, "%s #%d", *msg, i))
		if err != nil {
			return err
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(value)}).FirstErr(); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("produce to %s: %w", *topic, err)
		}
		log.Info().Int("seq", i).Str("topic", *topic).Int("bytes", len(value)).Msg("sent an encrypted message")
		if *count != 0 && i == *count {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*interval):
		}
	}
	return nil
}
