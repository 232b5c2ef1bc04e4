"""Training recipes: the bundled TOML files beside the schema of their sections (`schema`) and the
parsing, overrides and checks that turn a file into a Recipe (`config`)."""
