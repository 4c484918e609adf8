package natsrpc

import (
	"io"
	"slices"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/nats-io/nats.go"

	"github.com/aegis-sdk/kitnats/wire"
)

// Factory's addressing with WithRegistryMetadata: each instance is called
// where its registry record says it answers.

// withoutEnvelope and withEnvelope are the options addressingFactory adds
// for the two kinds of instance.
var (
	withoutEnvelope = clientOption(func(c *Client) error { c.aegis.format = 0; return nil })
	withEnvelope    = clientOption(func(c *Client) error {
		if c.aegis.format == 0 {
			c.aegis.format = EnvelopeJSON
		}
		return nil
	})
)

// addressingFactory is Factory with WithRegistryMetadata: an instance whose
// metadata says it serves instance subjects (wire.MetadataRPC =
// wire.RPCInstance) is called there, with the headers protocol; any other
// — an AegisSDK instance, or one the lookup does not know — on the
// service-wide subject, in envelopes (the format of WithEnvelope, JSON by
// default). Each instance still gets its own client, so the balancer
// counts, ejects and closes it per instance, though on the service-wide
// subject whichever instance NATS picks answers.
func addressingFactory(nc *nats.Conn, service, method string, enc EncodeRequestFunc, dec DecodeResponseFunc, lookup func(string) (map[string]string, bool), opts []ClientOption) sd.Factory {
	instanceOpts := append(slices.Clip(opts), ClientOption(withoutEnvelope))
	serviceOpts := append(slices.Clip(opts), ClientOption(withEnvelope))
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		if err := wire.ValidateInstance(instance); err != nil {
			return nil, nil, err
		}
		var (
			c   *Client
			err error
		)
		if md, ok := lookup(instance); ok && md[wire.MetadataRPC] == wire.RPCInstance {
			c, err = NewInstanceClient(nc, service, method, instance, enc, dec, instanceOpts...)
		} else {
			c, err = NewServiceClient(nc, service, method, enc, dec, serviceOpts...)
		}
		if err != nil {
			return nil, nil, err
		}
		return c.Endpoint(), c, nil
	}
}
