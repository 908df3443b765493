// JSON as msgspec reads it: 1 is an int (exact, a *big.Int here), 1.0 and 1e3 are floats, and a
// malformed document fails with msgspec's own message, so that this service's validation errors
// are word for word those of examples/shop/transaction.py (and of the Node service).
//
// encoding/json cannot do this: it does not keep object keys in document order, and its syntax
// errors are worded differently. Values decode to: nil, bool, string, *big.Int, Float, []Value,
// *Object.
package main

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"unicode/utf8"
)

// Value is one decoded JSON value.
type Value interface{}

// Float is a JSON number written with a fraction or an exponent.
type Float float64

// Object is a JSON object: its keys in the order they first appear (a repeated key keeps its
// first place and takes its last value, as a Python dict does).
type Object struct {
	Keys   []string
	Values map[string]Value
}

// NewObject is an empty Object.
func NewObject() *Object {
	return &Object{Values: map[string]Value{}}
}

// Set adds or replaces a key.
func (o *Object) Set(key string, v Value) *Object {
	if _, seen := o.Values[key]; !seen {
		o.Keys = append(o.Keys, key)
	}
	o.Values[key] = v
	return o
}

// Get is the value of a key and whether it is there.
func (o *Object) Get(key string) (Value, bool) {
	v, ok := o.Values[key]
	return v, ok
}

// JSONError is a document msgspec would not decode; its text is msgspec's message.
type JSONError struct{ msg string }

func (e *JSONError) Error() string { return e.msg }

func truncated() error { return &JSONError{"Input data was truncated"} }

func malformed(reason string, at int) error {
	return &JSONError{fmt.Sprintf("JSON is malformed: %s (byte %d)", reason, at)}
}

var escapes = map[byte]string{
	'"': "\"", '\\': "\\", '/': "/", 'b': "\b", 'f': "\f", 'n': "\n", 'r': "\r", 't': "\t",
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// decoder walks one document; i is the next byte.
type decoder struct {
	buf []byte
	i   int
}

// DecodeJSON is the JSON value in buf, or a *JSONError.
func DecodeJSON(buf []byte) (Value, error) {
	d := &decoder{buf: buf}
	v, err := d.value("")
	if err != nil {
		return nil, err
	}
	d.skip()
	if d.i < len(d.buf) {
		return nil, malformed("trailing characters", d.i+1)
	}
	return v, nil
}

func (d *decoder) skip() {
	for d.i < len(d.buf) && isSpace(d.buf[d.i]) {
		d.i++
	}
}

func (d *decoder) value(path string) (Value, error) {
	d.skip()
	if d.i >= len(d.buf) {
		return nil, truncated()
	}
	switch c := d.buf[d.i]; {
	case c == '{':
		return d.object(path)
	case c == '[':
		return d.array(path)
	case c == '"':
		return d.string()
	case c == 't':
		return d.literal("true", true)
	case c == 'f':
		return d.literal("false", false)
	case c == 'n':
		return d.literal("null", nil)
	case c == '-' || isDigit(c):
		return d.number(path)
	}
	return nil, malformed("invalid character", d.i)
}

func (d *decoder) literal(word string, v Value) (Value, error) {
	end := d.i + len(word)
	if end > len(d.buf) {
		return nil, truncated()
	}
	if string(d.buf[d.i:end]) != word {
		return nil, malformed("invalid character", end)
	}
	d.i = end
	return v, nil
}

func (d *decoder) hex4() (rune, error) {
	if d.i+4 > len(d.buf) {
		return 0, truncated()
	}
	var code rune
	for k := 0; k < 4; k++ {
		c := d.buf[d.i]
		lower := c | 0x20 // 'A'-'F' -> 'a'-'f'
		var digit rune
		switch {
		case isDigit(c):
			digit = rune(c - '0')
		case lower >= 'a' && lower <= 'f':
			digit = rune(lower-'a') + 10
		default:
			return 0, malformed("invalid character in unicode escape", d.i+1)
		}
		code = code*16 + digit
		d.i++
	}
	return code, nil
}

// string reads a string; invalid UTF-8 is reported once the string ends (as msgspec does: a bad
// escape or control character after it is reported first).
func (d *decoder) string() (string, error) {
	d.i++ // the opening quote
	out := make([]byte, 0, 16)
	start, validUTF8 := d.i, true
	flush := func(end int) {
		if end > start {
			validUTF8 = validUTF8 && utf8.Valid(d.buf[start:end])
			out = append(out, d.buf[start:end]...)
		}
	}
	for {
		if d.i >= len(d.buf) {
			return "", truncated()
		}
		c := d.buf[d.i]
		if c == '"' {
			flush(d.i)
			if !validUTF8 {
				return "", &JSONError{"Invalid UTF-8 encoded string"}
			}
			d.i++
			return string(out), nil
		}
		if c < 0x20 {
			return "", malformed("invalid character", d.i)
		}
		if c != '\\' {
			d.i++
			continue
		}
		flush(d.i)
		d.i++
		if d.i >= len(d.buf) {
			return "", truncated()
		}
		e := d.buf[d.i]
		if e == 'u' {
			d.i++
			code, err := d.unicodeEscape()
			if err != nil {
				return "", err
			}
			out = utf8.AppendRune(out, code)
		} else if text, ok := escapes[e]; ok {
			out = append(out, text...)
			d.i++
		} else {
			return "", malformed("invalid escape character in string", d.i+1)
		}
		start = d.i
	}
}

// unicodeEscape reads the XXXX of \uXXXX (and a low surrogate's \uXXXX after a high one).
func (d *decoder) unicodeEscape() (rune, error) {
	code, err := d.hex4()
	if err != nil {
		return 0, err
	}
	switch {
	case code >= 0xd800 && code <= 0xdbff:
		if d.i+6 > len(d.buf) {
			return 0, truncated()
		}
		if d.buf[d.i] != '\\' || d.buf[d.i+1] != 'u' {
			return 0, malformed("unexpected end of escaped utf-16 surrogate pair", d.i)
		}
		d.i += 2
		low, err := d.hex4()
		if err != nil {
			return 0, err
		}
		if low < 0xdc00 || low > 0xdfff {
			return 0, malformed("invalid utf-16 surrogate pair", d.i)
		}
		return 0x10000 + (code-0xd800)<<10 + (low - 0xdc00), nil
	case code >= 0xdc00 && code <= 0xdfff:
		return 0, malformed("invalid utf-16 surrogate pair", d.i)
	}
	return code, nil
}

func (d *decoder) digits() {
	for d.i < len(d.buf) && isDigit(d.buf[d.i]) {
		d.i++
	}
}

func (d *decoder) number(path string) (Value, error) {
	start, float := d.i, false
	if d.buf[d.i] == '-' {
		d.i++
	}
	if d.i >= len(d.buf) {
		return nil, malformed("invalid number", d.i)
	}
	switch {
	case d.buf[d.i] == '0':
		d.i++
		if d.i < len(d.buf) && isDigit(d.buf[d.i]) {
			return nil, malformed("invalid number", d.i)
		}
	case isDigit(d.buf[d.i]):
		d.digits()
	default:
		return nil, malformed("invalid character", d.i)
	}
	if d.i < len(d.buf) && d.buf[d.i] == '.' {
		float = true
		d.i++
		if d.i >= len(d.buf) || !isDigit(d.buf[d.i]) {
			return nil, malformed("invalid number", d.i)
		}
		d.digits()
	}
	if d.i < len(d.buf) && (d.buf[d.i] == 'e' || d.buf[d.i] == 'E') {
		float = true
		d.i++
		if d.i < len(d.buf) && (d.buf[d.i] == '+' || d.buf[d.i] == '-') {
			d.i++
		}
		if d.i >= len(d.buf) || !isDigit(d.buf[d.i]) {
			return nil, malformed("invalid number", d.i)
		}
		d.digits()
	}
	text := string(d.buf[start:d.i])
	if !float {
		n, _ := new(big.Int).SetString(text, 10) // the scan above admits only decimal digits
		return n, nil
	}
	f, _ := strconv.ParseFloat(text, 64) // out of range: +-Inf, checked below
	if math.IsInf(f, 0) {
		msg := "Number out of range"
		if path != "" {
			msg += " - at `$" + path + "`"
		}
		return nil, &JSONError{msg}
	}
	return Float(f), nil
}

func (d *decoder) object(path string) (Value, error) {
	d.i++
	out := NewObject()
	d.skip()
	if d.i >= len(d.buf) {
		return nil, truncated()
	}
	if d.buf[d.i] == '}' {
		d.i++
		return out, nil
	}
	for {
		if d.buf[d.i] != '"' {
			return nil, malformed("object keys must be strings", d.i)
		}
		key, err := d.string()
		if err != nil {
			return nil, err
		}
		d.skip()
		if d.i >= len(d.buf) {
			return nil, truncated()
		}
		if d.buf[d.i] != ':' {
			return nil, malformed("expected ':'", d.i)
		}
		d.i++
		v, err := d.value(path + "[...]")
		if err != nil {
			return nil, err
		}
		out.Set(key, v)
		if done, err := d.next('}', "expected ',' or '}'", "trailing comma in object"); done {
			if err != nil {
				return nil, err
			}
			return out, nil
		}
	}
}

func (d *decoder) array(path string) (Value, error) {
	d.i++
	out := []Value{}
	d.skip()
	if d.i >= len(d.buf) {
		return nil, truncated()
	}
	if d.buf[d.i] == ']' {
		d.i++
		return out, nil
	}
	for {
		v, err := d.value(fmt.Sprintf("%s[%d]", path, len(out)))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		if done, err := d.next(']', "expected ',' or ']'", "trailing comma in array"); done {
			if err != nil {
				return nil, err
			}
			return out, nil
		}
	}
}

// next reads what follows a member: the closing byte (done), or a comma and another member
// (not done); done with an error if neither.
func (d *decoder) next(closing byte, expected string, trailing string) (bool, error) {
	d.skip()
	if d.i >= len(d.buf) {
		return true, truncated()
	}
	if d.buf[d.i] == closing {
		d.i++
		return true, nil
	}
	if d.buf[d.i] != ',' {
		return true, malformed(expected, d.i)
	}
	d.i++
	d.skip()
	if d.i >= len(d.buf) {
		return true, truncated()
	}
	if d.buf[d.i] == closing {
		return true, malformed(trailing, d.i)
	}
	return false, nil
}
