Feature: The shop over gRPC
  The example shop served by chronik: commands go through CommandGateway.Handle, the loyalty
  saga turns completed transactions into points, and the read models follow.

  Background:
    Given the shop is served over gRPC

  Scenario: A customer earns loyalty points for a completed transaction
    When customer "c1" is created with name "Ada" and email "ada@example.com"
    And customer "c1" buys in transaction "t1":
      | sku  | price_cents | qty |
      | book | 1500        | 2   |
      | pen  | 250         | 3   |
    And transaction "t1" is completed
    Then the last call answered a "TransactionCompleted" event with amount_cents 3750
    And customer "c1" eventually has 37 loyalty points
    And the receipts read model lists transaction "t1" of customer "c1" for 3750 cents

  Scenario: A customer cannot be created twice
    Given customer "c2" exists
    When customer "c2" is created with name "Bo" and email "bo@example.com"
    Then the call fails with FAILED_PRECONDITION "Customer already exists"

  Scenario: An empty transaction cannot be completed
    Given customer "c3" exists
    When customer "c3" buys in transaction "t3":
      | sku | price_cents | qty |
    And transaction "t3" is completed
    Then the call fails with FAILED_PRECONDITION "Transaction is empty"

  Scenario: A payload that does not fit the command's schema is refused
    When a "CreateCustomer" command for customer "c4" carries {"name": 42}
    Then the call fails with INVALID_ARGUMENT naming "email"

  Scenario: A command for an unknown domain is not found
    When a "Restock" command for "warehouse" "w1" carries {}
    Then the call fails with NOT_FOUND naming "warehouse"
