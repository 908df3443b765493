// JSON text byte for byte as msgspec writes it (and JavaScript's JSON.stringify): no spaces,
// object keys in their order, strings as UTF-8 with only '"', '\\' and control characters escaped.
//
// encoding/json writes other bytes: it escapes <, >, &, U+2028 and U+2029, and (before Go 1.22)
// writes \b and \f as \u0008 and \u000c.
package main

import (
	"fmt"
	"math/big"
	"strconv"
)

const hexDigits = "0123456789abcdef"

// EncodeJSON is the JSON text of a Value (an error for a type a Value cannot hold).
func EncodeJSON(v Value) ([]byte, error) {
	return appendJSON(nil, v)
}

func appendJSON(out []byte, v Value) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(out, "null"...), nil
	case bool:
		return strconv.AppendBool(out, x), nil
	case string:
		return appendString(out, x), nil
	case *big.Int:
		return x.Append(out, 10), nil
	case Float:
		return strconv.AppendFloat(out, float64(x), 'g', -1, 64), nil
	case []Value:
		out = append(out, '[')
		for k, item := range x {
			if k > 0 {
				out = append(out, ',')
			}
			var err error
			if out, err = appendJSON(out, item); err != nil {
				return nil, err
			}
		}
		return append(out, ']'), nil
	case *Object:
		out = append(out, '{')
		for k, key := range x.Keys {
			if k > 0 {
				out = append(out, ',')
			}
			out = append(appendString(out, key), ':')
			var err error
			if out, err = appendJSON(out, x.Values[key]); err != nil {
				return nil, err
			}
		}
		return append(out, '}'), nil
	}
	return nil, fmt.Errorf("cannot encode a %T as JSON", v)
}

func appendString(out []byte, s string) []byte {
	out = append(out, '"')
	for k := 0; k < len(s); k++ {
		switch c := s[k]; {
		case c == '"' || c == '\\':
			out = append(out, '\\', c)
		case c == '\b':
			out = append(out, '\\', 'b')
		case c == '\f':
			out = append(out, '\\', 'f')
		case c == '\n':
			out = append(out, '\\', 'n')
		case c == '\r':
			out = append(out, '\\', 'r')
		case c == '\t':
			out = append(out, '\\', 't')
		case c < 0x20:
			out = append(out, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			out = append(out, c)
		}
	}
	return append(out, '"')
}
