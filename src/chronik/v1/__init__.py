"""Generated from proto/chronik/v1/chronik.proto by `make proto`; do not edit by hand."""
