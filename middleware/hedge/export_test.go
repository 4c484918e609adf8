package hedge

// The budget's bookkeeping, for its tests.
func (b *Budget) Deposit()          { b.deposit() }
func (b *Budget) TryWithdraw() bool { return b.tryWithdraw() }

// Available returns the backup requests the budget would allow now.
func (b *Budget) Available() int { return int(b.tokens.Load() / unit) }

// Error is what a call returns when both of its attempts failed.
type Error = bothFailedError

func (e *Error) Primary() (instance string, err error) { return e.primary.instance, e.primary.err }
func (e *Error) Backup() (instance string, err error)  { return e.backup.instance, e.backup.err }

const DefaultInitialDelay = defaultInitialDelay
