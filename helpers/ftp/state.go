package ftp

import (
	"encoding/binary"
	"errors"

	"github.com/tunrouter/router/conntrack"
)

var _ conntrack.HelperStateMarshaler = (*Helper)(nil)

// stateLen is the size of a marshalled connState: per direction, the count
// and the two remembered sequence numbers.
const stateLen = 2 * (1 + 4*seqAfterNewline)

// MarshalState encodes a control connection's state for a state file, so
// that after a restart the helper still knows where lines start.
func (h *Helper) MarshalState(state any) ([]byte, error) {
	st, ok := state.(*connState)
	if !ok || st == nil {
		return nil, errors.New("ftp: not an FTP connection state")
	}
	b := make([]byte, 0, stateLen)
	for d := range st.n {
		b = append(b, st.n[d])
		for i := range st.seq[d] {
			b = binary.BigEndian.AppendUint32(b, st.seq[d][i])
		}
	}
	return b, nil
}

// UnmarshalState decodes what MarshalState wrote.
func (h *Helper) UnmarshalState(b []byte) (any, error) {
	if len(b) != stateLen {
		return nil, errors.New("ftp: bad state length")
	}
	st := new(connState)
	for d := range st.n {
		st.n[d] = b[0]
		if st.n[d] > seqAfterNewline {
			return nil, errors.New("ftp: bad state")
		}
		for i := range st.seq[d] {
			st.seq[d][i] = binary.BigEndian.Uint32(b[1+4*i:])
		}
		b = b[1+4*seqAfterNewline:]
	}
	return st, nil
}
