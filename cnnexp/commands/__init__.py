"""One module per `cnnexp` subcommand, each with `run(args) -> exit status`: what the command line
means for that command. The work itself is done by the stage packages below them."""
