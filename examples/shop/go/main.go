// The shop's transaction domain as a chronik BusinessLogic gRPC service, in Go.
//
//	examples/shop/go/build.sh /tmp/transaction-service
//	/tmp/transaction-service 50062      (0: any free port; an optional second argument: the host)
//
// It behaves exactly like examples/shop/transaction.py run in-process and like the Node service
// (examples/shop/node): the same command schemas and validation messages, the same events with
// the same JSON payloads, the same rejection reasons, the same errors. Once it listens it prints
// "transaction business logic on HOST:PORT"; SIGTERM or SIGINT stop it (exit code 0).
package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"syscall"
	"time"

	pb "chronik/v1"

	"google.golang.org/grpc"
)

const (
	maxMessageBytes = 4 * 1024 * 1024
	stopGrace       = 2 * time.Second
)

var digits = regexp.MustCompile(`^\d+$`)

func main() {
	port, host := "50062", "127.0.0.1"
	if len(os.Args) > 1 {
		port = os.Args[1]
	}
	if len(os.Args) > 2 {
		host = os.Args[2]
	}
	if n, err := strconv.Atoi(port); !digits.MatchString(port) || err != nil || n > 65535 {
		fmt.Fprintln(os.Stderr, "usage: transaction-service PORT [HOST]   (PORT 0: any free port)")
		os.Exit(2)
	}
	address := net.JoinHostPort(host, port)
	listener, err := net.Listen("tcp", address)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cannot listen on %s: %v\n", address, err)
		os.Exit(1)
	}
	server := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMessageBytes),
		grpc.MaxSendMsgSize(maxMessageBytes),
	)
	pb.RegisterBusinessLogicServer(server, service{})
	go stopOnSignal(server)
	bound := listener.Addr().(*net.TCPAddr).Port
	fmt.Printf("transaction business logic on %s:%d\n", host, bound)
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}

// stopOnSignal stops the server on SIGTERM or SIGINT: calls in flight get stopGrace to finish.
func stopOnSignal(server *grpc.Server) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	timer := time.AfterFunc(stopGrace, server.Stop)
	server.GracefulStop()
	timer.Stop()
	os.Exit(0)
}
