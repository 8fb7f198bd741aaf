"""One module per `zerosearch` subcommand: `add_parser(sub)` declares its arguments, `run(cfg, args, progress)`
runs it and returns the exit code."""
