// The command schemas of examples/shop/events.py, with chronik's and msgspec's messages: a
// payload that transaction.py refuses is refused here with the same InvalidCommand text.
package main

import (
	"fmt"
	"math/big"
	"sort"
	"strings"
)

// Domain is the domain this service decides.
const Domain = "transaction"

// InvalidCommand is a payload its command's schema refuses (gRPC INVALID_ARGUMENT).
type InvalidCommand struct{ msg string }

func (e *InvalidCommand) Error() string { return e.msg }

// UnknownCommandType is a command type the domain does not have (gRPC NOT_FOUND).
type UnknownCommandType struct{ msg string }

func (e *UnknownCommandType) Error() string { return e.msg }

// check says what is wrong with a field's value ("" if nothing).
type check func(v Value) string

// field is one field of a schema, in the schema's order.
type field struct {
	name  string
	check check
}

// Item is one line of a basket (events.Item).
type Item struct {
	Sku        string
	PriceCents *big.Int
	Qty        *big.Int
}

// Object is the item as the event stores it: the schema's fields, in the schema's order.
func (it Item) Object() *Object {
	return NewObject().Set("sku", it.Sku).Set("price_cents", it.PriceCents).Set("qty", it.Qty)
}

// Command is a parsed command: the payload's fields (CompleteTransaction has none).
type Command struct {
	CustomerID string
	Items      []Item
}

type commandSpec struct {
	fields  []field
	convert func(*Object) Command
}

// typeName is msgspec's name for the JSON type of a value.
func typeName(v Value) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case *big.Int:
		return "int"
	case Float:
		return "float"
	case string:
		return "str"
	case []Value:
		return "array"
	}
	return "object"
}

func checkStr(v Value) string {
	if _, ok := v.(string); ok {
		return ""
	}
	return fmt.Sprintf("Expected `str`, got `%s`", typeName(v))
}

func checkInt(min int64) check {
	return func(v Value) string {
		n, ok := v.(*big.Int)
		if !ok {
			return fmt.Sprintf("Expected `int`, got `%s`", typeName(v))
		}
		if n.Cmp(big.NewInt(min)) < 0 {
			return fmt.Sprintf("Expected `int` >= %d", min)
		}
		return ""
	}
}

// itemFields: sku str, price_cents int >= 0, qty int >= 1 (unknown keys ignored, as msgspec does).
var itemFields = []field{{"sku", checkStr}, {"price_cents", checkInt(0)}, {"qty", checkInt(1)}}

func itemField(key string) check {
	for _, f := range itemFields {
		if f.name == key {
			return f.check
		}
	}
	return nil
}

// checkItems checks a list of items: the first problem, as msgspec reports it.
func checkItems(v Value) string {
	items, ok := v.([]Value)
	if !ok {
		return fmt.Sprintf("Expected `array`, got `%s`", typeName(v))
	}
	for k, x := range items {
		item, ok := x.(*Object)
		if !ok {
			return fmt.Sprintf("Expected `object`, got `%s` - at `$[%d]`", typeName(x), k)
		}
		for _, key := range item.Keys {
			if check := itemField(key); check != nil {
				if problem := check(item.Values[key]); problem != "" {
					return fmt.Sprintf("%s - at `$[%d].%s`", problem, k, key)
				}
			}
		}
		for _, f := range itemFields {
			if _, ok := item.Get(f.name); !ok {
				return fmt.Sprintf("Object missing required field `%s` - at `$[%d]`", f.name, k)
			}
		}
	}
	return ""
}

// toItem is a checked item as an Item.
func toItem(o *Object) Item {
	return Item{
		Sku:        o.Values["sku"].(string),
		PriceCents: o.Values["price_cents"].(*big.Int),
		Qty:        o.Values["qty"].(*big.Int),
	}
}

var commands = map[string]commandSpec{
	"CreateTransaction": {
		fields: []field{{"customer_id", checkStr}, {"items", checkItems}},
		convert: func(p *Object) Command {
			cmd := Command{CustomerID: p.Values["customer_id"].(string), Items: []Item{}}
			for _, x := range p.Values["items"].([]Value) {
				cmd.Items = append(cmd.Items, toItem(x.(*Object)))
			}
			return cmd
		},
	},
	"CompleteTransaction": {convert: func(*Object) Command { return Command{} }},
}

func invalid(commandType string, problems map[string]string) error {
	keys := make([]string, 0, len(problems))
	for key := range problems {
		keys = append(keys, key)
	}
	sort.Strings(keys) // by code point, as Python sorts
	listed := make([]string, len(keys))
	for k, key := range keys {
		listed[k] = key + ": " + problems[key]
	}
	msg := fmt.Sprintf("invalid %s payload: %s", commandType, strings.Join(listed, "; "))
	return &InvalidCommand{msg}
}

// ParseCommand is the payload checked against its command's schema (chronik's CommandSpec.parse).
func ParseCommand(commandType string, payload []byte) (Command, error) {
	spec, ok := commands[commandType]
	if !ok {
		known := make([]string, 0, len(commands))
		for name := range commands {
			known = append(known, name)
		}
		sort.Strings(known)
		msg := fmt.Sprintf("domain '%s' has no command '%s' (known: %s)",
			Domain, commandType, strings.Join(known, ", "))
		return Command{}, &UnknownCommandType{msg}
	}
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	decoded, err := DecodeJSON(payload)
	if err != nil {
		return Command{}, invalid(commandType, map[string]string{"payload": "not valid JSON: " + err.Error()})
	}
	data, ok := decoded.(*Object)
	if !ok {
		return Command{}, invalid(commandType, map[string]string{"payload": "expected a JSON object"})
	}
	problems := map[string]string{}
	inSchema := map[string]bool{}
	for _, f := range spec.fields {
		inSchema[f.name] = true
		if v, ok := data.Get(f.name); !ok {
			problems[f.name] = "required"
		} else if problem := f.check(v); problem != "" {
			problems[f.name] = problem
		}
	}
	for _, key := range data.Keys {
		if !inSchema[key] {
			problems[key] = "unknown field"
		}
	}
	if len(problems) > 0 {
		return Command{}, invalid(commandType, problems)
	}
	return spec.convert(data), nil
}
