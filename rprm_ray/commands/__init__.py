"""One module per `rprm-ray` subcommand (arguments + work)."""
