Feature: Snapshots and schema evolution
  Snapshots are a cache: loading from one plus the events after it gives the same state as
  replaying everything. Old event versions are upcast when read and never rewritten.

  Scenario: Snapshot plus tail equals full replay
    Given aggregate "order-50" has 250 "ItemAdded" events, snapshotted every 100 events
    When the aggregate "order-50" is loaded
    Then it was loaded from the snapshot at sequence 199 plus 50 later events
    And its state equals a full replay of its events

  Scenario: Upcasting v1 to v3
    Given a stored "ItemAdded" event of aggregate "order-60" at schema version 1 with payload {"sku": "A-1"}
    When the aggregate "order-60" is loaded
    Then its state lists the item {"sku": "A-1", "qty": 1, "price_cents": 0}
    And the stored event is still at schema version 1 with payload {"sku": "A-1"}
