// The aggregate of examples/shop/transaction.py: the state, how events change it (evolve) and
// which events a command produces (decide), with the same rejection reasons.
package main

import (
	"fmt"
	"math/big"
)

// State is a transaction as its events left it.
type State struct {
	CustomerID string
	Items      []Item
	Completed  bool
}

// Initial is the state before any event.
func Initial() State {
	return State{Items: []Item{}}
}

// Decided is one event a command produces.
type Decided struct {
	Type    string
	Payload *Object
}

// Rejected is a command the state refuses: an answer (BusinessResponse.rejection), not an error.
type Rejected struct{ Reason string }

func (e *Rejected) Error() string { return e.Reason }

// Evolve is the state after one stored event (other event types leave it as it is).
func Evolve(state State, eventType string, payload []byte) (State, error) {
	switch eventType {
	case "TransactionCreated":
		data, err := decodeObject(payload)
		if err != nil {
			return state, fmt.Errorf("%s payload: %w", eventType, err)
		}
		customer, ok := data.Values["customer_id"].(string)
		items, err := itemsOf(data.Values["items"])
		if !ok || err != nil {
			return state, fmt.Errorf("%s payload: not a customer_id and items", eventType)
		}
		state.CustomerID, state.Items = customer, items
	case "TransactionCompleted":
		state.Completed = true
	}
	return state, nil
}

// Decide is the events a command produces, or a *Rejected.
func Decide(commandType string, cmd Command, state State) ([]Decided, error) {
	if commandType == "CreateTransaction" {
		if state.CustomerID != "" {
			return nil, &Rejected{"Transaction already exists"}
		}
		items := make([]Value, len(cmd.Items))
		for k, it := range cmd.Items {
			items[k] = it.Object()
		}
		payload := NewObject().Set("customer_id", cmd.CustomerID).Set("items", items)
		return []Decided{{"TransactionCreated", payload}}, nil
	}
	switch {
	case state.CustomerID == "":
		return nil, &Rejected{"Transaction does not exist"}
	case state.Completed:
		return nil, &Rejected{"Transaction is already completed"}
	case len(state.Items) == 0:
		return nil, &Rejected{"Transaction is empty"}
	}
	amount := new(big.Int)
	for _, it := range state.Items {
		amount.Add(amount, new(big.Int).Mul(it.PriceCents, it.Qty))
	}
	payload := NewObject().Set("customer_id", state.CustomerID).Set("amount_cents", amount)
	return []Decided{{"TransactionCompleted", payload}}, nil
}

// EncodeState is the state as a snapshot holds it.
func EncodeState(state State) ([]byte, error) {
	items := make([]Value, len(state.Items))
	for k, it := range state.Items {
		items[k] = it.Object()
	}
	return EncodeJSON(NewObject().
		Set("customer_id", state.CustomerID).
		Set("items", items).
		Set("completed", state.Completed))
}

// DecodeState is the state a snapshot holds.
func DecodeState(raw []byte) (State, error) {
	data, err := decodeObject(raw)
	if err != nil {
		return State{}, fmt.Errorf("snapshot: %w", err)
	}
	customer, ok := data.Values["customer_id"].(string)
	completed, isBool := data.Values["completed"].(bool)
	items, err := itemsOf(data.Values["items"])
	if !ok || !isBool || err != nil {
		return State{}, fmt.Errorf("snapshot: not a transaction state")
	}
	return State{CustomerID: customer, Items: items, Completed: completed}, nil
}

func decodeObject(raw []byte) (*Object, error) {
	v, err := DecodeJSON(raw)
	if err != nil {
		return nil, err
	}
	data, ok := v.(*Object)
	if !ok {
		return nil, fmt.Errorf("expected a JSON object, got %s", typeName(v))
	}
	return data, nil
}

// itemsOf is a stored list of items (written by this service or transaction.py).
func itemsOf(v Value) ([]Item, error) {
	if problem := checkItems(v); problem != "" {
		return nil, fmt.Errorf("items: %s", problem)
	}
	list := v.([]Value)
	items := make([]Item, len(list))
	for k, x := range list {
		items[k] = toItem(x.(*Object))
	}
	return items, nil
}
