package natsrpc_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aegis-sdk/kitnats/internal/aegistest"
	"github.com/aegis-sdk/kitnats/transport/natsrpc"
)

type EchoRequest struct {
	Message string `json:"message"`
}

type EchoResponse struct {
	Echo string `json:"echo"`
}

// A kitnats client calling a Python AegisSDK service (here a stand-in that
// speaks its wire format): the same JSON codecs, in envelopes. A standby's
// NOT_ACTIVE answer is ErrNotActive, which retry middleware retries on
// another instance.
func ExampleWithEnvelope() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, stop, err := exampleNATS()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	python, err := aegistest.NewServer(nc, "echo-service", "echo-service-3f9a1c2b", aegistest.Msgpack,
		map[string]aegistest.Handler{"echo": func(p map[string]any) (any, error) {
			return map[string]any{"echo": p["message"]}, nil
		}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer python.Close()

	client, err := natsrpc.NewServiceClient(nc, "echo-service", "echo", natsrpc.EncodeJSONRequest, natsrpc.DecodeJSONResponse[EchoResponse],
		natsrpc.WithEnvelope(natsrpc.EnvelopeMsgpack))
	if err != nil {
		fmt.Println(err)
		return
	}
	resp, err := natsrpc.Call[EchoResponse](ctx, client.Endpoint(), EchoRequest{Message: "hi"})
	fmt.Println(resp.Echo, err)

	python.SetMode(aegistest.NotActiveError)
	_, err = client.Endpoint()(ctx, EchoRequest{Message: "hi"})
	var retryable interface{ Retryable() bool }
	fmt.Println(errors.Is(err, natsrpc.ErrNotActive), errors.As(err, &retryable) && retryable.Retryable())
	// Output:
	// hi <nil>
	// true true
}
