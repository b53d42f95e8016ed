"""The `powernode` command line: Typer root plus one module per noun. It talks to the HTTP API;
logic lives in the services."""
