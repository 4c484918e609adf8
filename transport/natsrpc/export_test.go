package natsrpc

import "github.com/nats-io/nats.go/micro"

// What the tests read of a Service and a Client that users read through
// NATS ($SRV discovery) or do not need.

// InfoOf is the Service's $SRV.INFO answer.
func InfoOf(s *Service) micro.Info { return s.info() }

// StatsOf is the Service's $SRV.STATS answer.
func StatsOf(s *Service) micro.Stats { return s.stats() }

// SubjectOf is the subject the Client sends to.
func SubjectOf(c *Client) string { return c.subject }
