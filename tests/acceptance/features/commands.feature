Feature: Handling commands
  chronik loads an aggregate's history, hands it to the business logic with the command,
  appends what the logic decides and keeps every stream's sequence gapless. The business
  logic here is the "orders" decider of tests/acceptance/test_commands.py.

  Scenario: Handle command with existing history
    Given prior events for aggregate "order-456" in domain "orders":
      | sequence | event_type   |
      | 0        | OrderCreated |
      | 1        | ItemAdded    |
    When I send an "AddItem" command for aggregate "order-456"
    Then the business logic receives the command with 2 prior events
    And 3 events total exist for aggregate "order-456"

  Scenario: A rejected command stores nothing
    Given prior events for aggregate "order-1" in domain "orders":
      | sequence | event_type   |
      | 0        | OrderCreated |
      | 1        | OrderShipped |
    When I send an "AddItem" command for aggregate "order-1"
    Then the command is rejected with "Order already shipped"
    And 2 events total exist for aggregate "order-1"

  Scenario: A concurrent write makes the command retry on fresh state
    Given prior events for aggregate "order-7" in domain "orders":
      | sequence | event_type   |
      | 0        | OrderCreated |
    And another writer appends an "ItemAdded" event to "order-7" during the first decision
    When I send an "AddItem" command for aggregate "order-7"
    Then the business logic was called 2 times
    And the business logic receives the command with 2 prior events
    And 3 events total exist for aggregate "order-7"

  Scenario: Sending the same command twice appends once
    Given prior events for aggregate "order-9" in domain "orders":
      | sequence | event_type   |
      | 0        | OrderCreated |
    When I send an "AddItem" command with id "cmd-1" for aggregate "order-9"
    And I send an "AddItem" command with id "cmd-1" for aggregate "order-9"
    Then the second result is a duplicate of the first
    And 2 events total exist for aggregate "order-9"

  Scenario: An unknown command type is not a rejection
    When I send an "CancelEverything" command for aggregate "order-3"
    Then the command fails with UnknownCommandType naming "CancelEverything"
    And 0 events total exist for aggregate "order-3"
