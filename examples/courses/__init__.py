"""Course subscriptions over dynamic consistency boundaries (the DCB specification's example)."""
