"""Integration tests against real servers (a package, so that its module names never clash with
the unit and conformance tests of the same name, e.g. test_cloudevents, test_redis_store)."""
