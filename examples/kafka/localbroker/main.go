// Command localbroker runs an in-memory, single-process Kafka broker on
// loopback (franz-go's kfake, which speaks the Kafka wire protocol) for the
// local variant of the skrfs Kafka example and its test. It is a test
// broker: nothing is persisted. It prints "listening on ADDR" when ready
// and runs until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "port on 127.0.0.1 (0: any free port)")
	topic := flag.String("topic", "kafka-demo-topic", "topic to create (one partition)")
	flag.Parse()
	c, err := kfake.NewCluster(kfake.Ports(*port), kfake.SeedTopics(1, *topic), kfake.AllowAutoTopicCreation())
	if err != nil {
		fmt.Fprintf(os.Stderr, "localbroker: %v\n", err)
		os.Exit(1)
	}
	defer c.Close()
	fmt.Printf("listening on %s\n", c.ListenAddrs()[0])
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
