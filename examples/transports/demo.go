package transports

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/go-kit/kit/sd"

	"github.com/aegis-sdk/kitnats/sd/natskv"
)

// Demo is the scenario both examples run: three instances of Service,
// serving Transport, a client under load, a crash, a drain, and both back on
// their ports under new IDs.
type Demo struct {
	Service   string
	Transport string // "http", "grpc": the address the instances register
	// Listen serves instance id on addr ("127.0.0.1:0" for any port).
	Listen func(id, addr string) (Server, error)
	// Call builds the client over the instancer: call returns the ID of
	// the instance that answered; done releases what the client holds.
	Call func(instancer sd.Instancer) (call func(context.Context) (string, error), done func(), err error)
}

// Run runs the scenario for d with workers concurrent callers.
func (dm Demo) Run(ctx context.Context, d time.Duration, workers int) (Report, error) {
	reg, err := StartRegistry(ctx)
	if err != nil {
		return Report{}, err
	}
	defer reg.Close()
	ins := map[string]*Instance{}
	defer func() {
		for _, in := range ins {
			in.Stop()
		}
	}()
	start := func(ctx context.Context, id, addr string) error {
		srv, err := dm.Listen(id, addr)
		if err != nil {
			return err
		}
		in, err := StartInstance(ctx, reg.Bucket, dm.Service, id, dm.Transport, srv, nil)
		if err != nil {
			return err
		}
		ins[id] = in
		return nil
	}
	for _, id := range []string{"greeter-1", "greeter-2", "greeter-3"} {
		if err := start(ctx, id, "127.0.0.1:0"); err != nil {
			return Report{}, err
		}
	}

	instancer, err := natskv.NewInstancerContext(ctx, reg.Bucket, dm.Service, nil, Liveness, natskv.WithAddresses(dm.Transport))
	if err != nil {
		return Report{}, err
	}
	defer instancer.Stop()
	call, done, err := dm.Call(instancer)
	if err != nil {
		return Report{}, err
	}
	defer done()

	addr1, addr2 := ins["greeter-1"].Addr(), ins["greeter-2"].Addr()
	rep := Run(ctx, d, workers, call,
		Step{At: d / 5, Name: "greeter-1 crashes", Do: func(context.Context) error {
			ins["greeter-1"].Crash()
			return nil
		}},
		Step{At: 2 * d / 5, Name: "greeter-2 drains", Do: func(ctx context.Context) error {
			return ins["greeter-2"].Drain(ctx)
		}},
		Step{At: 3 * d / 5, Name: "greeter-1 is back (greeter-1b, same port)", Do: func(ctx context.Context) error {
			return start(ctx, "greeter-1b", addr1)
		}},
		Step{At: 4 * d / 5, Name: "greeter-2 is back (greeter-2b, same port)", Do: func(ctx context.Context) error {
			return start(ctx, "greeter-2b", addr2)
		}},
	)
	if len(rep.ByInstance) == 0 {
		return rep, errors.New("no call answered")
	}
	return rep, nil
}

// Main is an example's main: flags, the run, the report, and a non-zero
// exit status when a call failed.
func Main(name string, run func(ctx context.Context, d time.Duration, workers int) (Report, error)) {
	duration := flag.Duration("duration", 5*time.Second, "how long the client calls")
	workers := flag.Int("workers", 8, "concurrent callers")
	flag.Parse()
	rep, err := run(context.Background(), *duration, *workers)
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
	fmt.Print(rep)
	if rep.Failed > 0 {
		os.Exit(1)
	}
}
