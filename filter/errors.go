package filter

import (
	"strconv"
	"strings"
)

// Error is one problem found by Compile. It names where the problem is, so
// that the configuration layer can turn it into a file position.
type Error struct {
	// Set is the name of the set the error is in ("" when it is in a
	// chain).
	Set string
	// Chain and Rule locate a rule (Rule -1: the chain itself, e.g. its
	// policy). Meaningless when Set is not empty.
	Chain Chain
	Rule  int
	// Field is the rule's key ("dport", "action"; FieldPolicy for a chain;
	// FieldElems for a set's elements).
	Field string
	// Elem is the index of the offending element in the field's list, -1
	// when the error is about the field as a whole.
	Elem int
	Msg  string
}

// Path returns the location in the configuration's key syntax:
// "chains.forward.rules[3].dport[1]", "sets.lan[2]".
func (e *Error) Path() string {
	var b strings.Builder
	if e.Set != "" {
		b.WriteString("sets.")
		b.WriteString(e.Set)
	} else {
		b.WriteString("chains.")
		b.WriteString(e.Chain.String())
		if e.Rule >= 0 {
			b.WriteString(".rules[")
			b.WriteString(strconv.Itoa(e.Rule))
			b.WriteByte(']')
		}
		if e.Field != "" {
			b.WriteByte('.')
			b.WriteString(e.Field)
		}
	}
	if e.Elem >= 0 {
		b.WriteByte('[')
		b.WriteString(strconv.Itoa(e.Elem))
		b.WriteByte(']')
	}
	return b.String()
}

func (e *Error) Error() string { return e.Path() + ": " + e.Msg }

// Errors is every problem Compile found, in spec order.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Warning is a rule that can never match: shadowed by an earlier terminal
// rule whose matches are a superset of its own, or contradictory in
// itself.
type Warning struct {
	Chain Chain
	Rule  int
	// ShadowedBy is the earlier rule that takes all of this rule's
	// packets, -1 when the rule contradicts itself.
	ShadowedBy int
	// Msg says why, without rule numbers (String adds them).
	Msg string
}

// Path returns the rule's location in the configuration's key syntax.
func (w Warning) Path() string {
	return "chains." + w.Chain.String() + ".rules[" + strconv.Itoa(w.Rule) + "]"
}

func (w Warning) String() string {
	if w.ShadowedBy >= 0 {
		return w.Path() + ": " + w.Msg + " (rule " + strconv.Itoa(w.ShadowedBy) + ")"
	}
	return w.Path() + ": " + w.Msg
}
