"""The Hydra glue every command shares: composing a command's config outside Hydra's app runner
(so bad input is one line and exit status 2 before anything is written), the resolvers and the
TFDS config source its configs need, running a command as a Hydra app, and the launcher hooks
of sweeps. Commands (cnnexp.commands) import it; nothing below the commands does."""
