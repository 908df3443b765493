// BusinessLogic.Handle: a ContextualCommand (the command, the latest snapshot this service
// returned, the events after it) folded into a state and decided into a BusinessResponse.
// Errors: unknown command type NOT_FOUND, bad payload INVALID_ARGUMENT, both with chronik's error
// name in the "chronik-error" trailer; a rejection is an answer, not an error; anything else
// (a stored event this service cannot read, a bug) INTERNAL.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	pb "chronik/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	snapshotEvery = 100 // as transaction.py: chronik.Snapshots(every=100)
	stateType     = "transaction.go"
	stateVersion  = 1
	errorKey      = "chronik-error" // trailing metadata: the chronik error class name
)

// service implements chronik.v1.BusinessLogic.
type service struct {
	pb.UnimplementedBusinessLogicServer
}

// Handle answers one command; a panic becomes INTERNAL instead of ending the process.
func (service) Handle(ctx context.Context, req *pb.ContextualCommand) (resp *pb.BusinessResponse, err error) {
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, fmt.Errorf("panic: %v", p)
		}
		if err != nil {
			resp, err = nil, statusOf(ctx, err)
		}
	}()
	return handle(req)
}

// statusOf is the gRPC status of an error, with the trailer naming chronik's error class.
func statusOf(ctx context.Context, err error) error {
	var bad *InvalidCommand
	var unknown *UnknownCommandType
	name, code := "", codes.Internal
	switch {
	case errors.As(err, &bad):
		name, code = "InvalidCommand", codes.InvalidArgument
	case errors.As(err, &unknown):
		name, code = "UnknownCommandType", codes.NotFound
	default:
		fmt.Fprintln(os.Stderr, "business logic failed:", err)
	}
	if name != "" {
		_ = grpc.SetTrailer(ctx, metadata.Pairs(errorKey, name))
	}
	return status.Error(code, err.Error())
}

func handle(req *pb.ContextualCommand) (*pb.BusinessResponse, error) {
	command := req.GetCommand()
	cmd, err := ParseCommand(command.GetType(), command.GetPayload())
	if err != nil {
		return nil, err
	}
	state, base := Initial(), int64(-1)
	if snap := req.GetSnapshot(); snap.GetType() == stateType && snap.GetSchemaVersion() == stateVersion {
		if state, err = DecodeState(snap.GetState()); err != nil {
			return nil, err
		}
		base = int64(snap.GetSequence())
	}
	for _, event := range req.GetEvents() {
		if state, err = Evolve(state, event.GetType(), event.GetPayload()); err != nil {
			return nil, err
		}
	}
	decided, err := Decide(command.GetType(), cmd, state)
	var rejected *Rejected
	if errors.As(err, &rejected) {
		return &pb.BusinessResponse{Rejection: rejected.Reason}, nil
	}
	if err != nil {
		return nil, err
	}
	response := &pb.BusinessResponse{}
	for _, event := range decided {
		payload, err := EncodeJSON(event.Payload)
		if err != nil {
			return nil, err
		}
		response.Events = append(response.Events, &pb.NewEvent{
			Type: event.Type, Payload: payload, SchemaVersion: 1,
		})
		if state, err = Evolve(state, event.Type, payload); err != nil {
			return nil, err
		}
	}
	version := req.GetVersion() + int64(len(decided))
	if len(decided) > 0 && version-base >= snapshotEvery {
		raw, err := EncodeState(state)
		if err != nil {
			return nil, err
		}
		response.Snapshot = &pb.Snapshot{
			Sequence: uint64(version), Type: stateType, SchemaVersion: stateVersion, State: raw,
		}
	}
	return response, nil
}
