package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// DNS record types and classes the lab's responder understands.
const (
	DNSTypeA    uint16 = 1
	DNSTypeAAAA uint16 = 28
	DNSClassIN  uint16 = 1

	DNSRcodeOK       = 0
	DNSRcodeFormErr  = 1
	DNSRcodeNXDomain = 3
	DNSRcodeNotImpl  = 4
)

// ClusterDomain is the lab's cluster DNS domain.
const ClusterDomain = "cluster.local"

// DNSQuestion is the single question of a DNS query.
type DNSQuestion struct {
	ID    uint16
	Flags uint16 // the query's header flags (RD is echoed)
	Name  string // lower case, fully qualified with a trailing dot
	Type  uint16
	Class uint16
}

// ParseDNSQuery decodes a DNS query message with exactly one question.
// Compression pointers are followed with a bound, so a looping message is
// an error, not a hang.
func ParseDNSQuery(msg []byte) (DNSQuestion, error) {
	var q DNSQuestion
	if len(msg) < 12 {
		return q, fmt.Errorf("dns query: %d bytes is shorter than the 12-byte header", len(msg))
	}
	q.ID = binary.BigEndian.Uint16(msg[0:])
	q.Flags = binary.BigEndian.Uint16(msg[2:])
	if q.Flags&0x8000 != 0 {
		return q, errors.New("dns query: QR bit set, this is a response")
	}
	if n := binary.BigEndian.Uint16(msg[4:]); n != 1 {
		return q, fmt.Errorf("dns query: %d questions, want 1", n)
	}
	name, off, err := readDNSName(msg, 12)
	if err != nil {
		return q, fmt.Errorf("dns query: question name: %w", err)
	}
	if off+4 > len(msg) {
		return q, errors.New("dns query: question truncated after the name")
	}
	q.Name = name
	q.Type = binary.BigEndian.Uint16(msg[off:])
	q.Class = binary.BigEndian.Uint16(msg[off+2:])
	return q, nil
}

func readDNSName(msg []byte, off int) (string, int, error) {
	var labels []string
	end := -1 // offset after the name in the original position
	for jumps := 0; ; {
		if off >= len(msg) {
			return "", 0, errors.New("name runs past the end of the message")
		}
		l := int(msg[off])
		switch {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			name := strings.ToLower(strings.Join(labels, ".")) + "."
			if len(name) > 254 {
				return "", 0, fmt.Errorf("name is %d bytes, longer than 253", len(name)-1)
			}
			return name, end, nil
		case l&0xC0 == 0xC0:
			if off+1 >= len(msg) {
				return "", 0, errors.New("compression pointer truncated")
			}
			if jumps++; jumps > 16 {
				return "", 0, errors.New("too many compression pointers")
			}
			if end < 0 {
				end = off + 2
			}
			off = int(binary.BigEndian.Uint16(msg[off:]) & 0x3FFF)
		case l&0xC0 != 0:
			return "", 0, fmt.Errorf("label type 0x%x is not supported", l&0xC0)
		default:
			if off+1+l > len(msg) {
				return "", 0, errors.New("label runs past the end of the message")
			}
			labels = append(labels, string(msg[off+1:off+1+l]))
			off += 1 + l
		}
	}
}

func appendDNSName(b []byte, name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".")
	if name != "" {
		for _, l := range strings.Split(name, ".") {
			if l == "" || len(l) > 63 {
				return nil, fmt.Errorf("name %q: label %q must be 1-63 bytes", name, l)
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	return append(b, 0), nil
}

// BuildDNSQuery encodes a recursive query for name (made fully qualified).
func BuildDNSQuery(id uint16, name string, qtype uint16) ([]byte, error) {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[0:], id)
	binary.BigEndian.PutUint16(b[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	b, err := appendDNSName(b, name)
	if err != nil {
		return nil, fmt.Errorf("dns query: %w", err)
	}
	b = binary.BigEndian.AppendUint16(b, qtype)
	return binary.BigEndian.AppendUint16(b, DNSClassIN), nil
}

// BuildDNSResponse answers q with rcode and one record per address of the
// question's type (A for IPv4, AAAA for IPv6; others are left out).
func BuildDNSResponse(q DNSQuestion, rcode int, addrs []netip.Addr, ttl uint32) ([]byte, error) {
	var answers []netip.Addr
	for _, a := range addrs {
		if (q.Type == DNSTypeA && a.Is4()) || (q.Type == DNSTypeAAAA && a.Is6() && !a.Is4In6()) {
			answers = append(answers, a)
		}
	}
	b := make([]byte, 12, 128)
	binary.BigEndian.PutUint16(b[0:], q.ID)
	// QR, AA, RD echoed, RA.
	binary.BigEndian.PutUint16(b[2:], 0x8000|0x0400|(q.Flags&0x0100)|0x0080|uint16(rcode&0xF))
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], uint16(len(answers)))
	b, err := appendDNSName(b, q.Name)
	if err != nil {
		return nil, fmt.Errorf("dns response: %w", err)
	}
	b = binary.BigEndian.AppendUint16(b, q.Type)
	b = binary.BigEndian.AppendUint16(b, q.Class)
	for _, a := range answers {
		b = append(b, 0xC0, 12) // pointer to the question name
		b = binary.BigEndian.AppendUint16(b, q.Type)
		b = binary.BigEndian.AppendUint16(b, DNSClassIN)
		b = binary.BigEndian.AppendUint32(b, ttl)
		raw := a.AsSlice()
		b = binary.BigEndian.AppendUint16(b, uint16(len(raw)))
		b = append(b, raw...)
	}
	return b, nil
}

// ParseDNSResponse decodes the addresses of the A and AAAA answers of a
// response to the query with id.
func ParseDNSResponse(msg []byte, id uint16) (rcode int, addrs []netip.Addr, err error) {
	if len(msg) < 12 {
		return 0, nil, fmt.Errorf("dns response: %d bytes is shorter than the header", len(msg))
	}
	if got := binary.BigEndian.Uint16(msg); got != id {
		return 0, nil, fmt.Errorf("dns response: id %d, want %d", got, id)
	}
	flags := binary.BigEndian.Uint16(msg[2:])
	if flags&0x8000 == 0 {
		return 0, nil, errors.New("dns response: QR bit clear")
	}
	qd, an := int(binary.BigEndian.Uint16(msg[4:])), int(binary.BigEndian.Uint16(msg[6:]))
	off := 12
	for i := 0; i < qd; i++ {
		if _, off, err = readDNSName(msg, off); err != nil {
			return 0, nil, fmt.Errorf("dns response: question: %w", err)
		}
		off += 4
	}
	for i := 0; i < an; i++ {
		if _, off, err = readDNSName(msg, off); err != nil {
			return 0, nil, fmt.Errorf("dns response: answer %d: %w", i, err)
		}
		if off+10 > len(msg) {
			return 0, nil, fmt.Errorf("dns response: answer %d truncated", i)
		}
		typ := binary.BigEndian.Uint16(msg[off:])
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		off += 10
		if off+rdlen > len(msg) {
			return 0, nil, fmt.Errorf("dns response: answer %d data truncated", i)
		}
		if a, ok := netip.AddrFromSlice(msg[off : off+rdlen]); ok && (typ == DNSTypeA || typ == DNSTypeAAAA) {
			addrs = append(addrs, a)
		}
		off += rdlen
	}
	return int(flags & 0xF), addrs, nil
}

// DNSSearchNames expands name as a pod's resolver does with the search path
// "<ns>.svc.cluster.local svc.cluster.local cluster.local" and ndots:5: a
// name ending in "." is tried as is; a name with fewer than five dots is
// tried with each search suffix first, then as is.
func DNSSearchNames(name, namespace string) []string {
	if strings.HasSuffix(name, ".") {
		return []string{strings.ToLower(name)}
	}
	name = strings.ToLower(name)
	search := []string{namespace + ".svc." + ClusterDomain, "svc." + ClusterDomain, ClusterDomain}
	var out []string
	if strings.Count(name, ".") < 5 {
		for _, s := range search {
			out = append(out, name+"."+s+".")
		}
	}
	return append(out, name+".")
}

// DNSZone is what the lab's responder answers: Services by
// "<svc>.<ns>.svc.cluster.local." and external names, both fully qualified
// and lower case.
type DNSZone struct {
	Records map[string][]netip.Addr
}

// ServiceDNSName is the fully qualified name of a Service.
func ServiceDNSName(namespace, name string) string {
	return name + "." + namespace + ".svc." + ClusterDomain + "."
}

// Answer builds the response to a raw query. A malformed query gets
// FORMERR when its header is readable and an error otherwise.
func (z *DNSZone) Answer(query []byte) ([]byte, error) {
	q, err := ParseDNSQuery(query)
	if err != nil {
		if len(query) < 12 {
			return nil, err
		}
		q = DNSQuestion{ID: binary.BigEndian.Uint16(query), Flags: binary.BigEndian.Uint16(query[2:])}
		return formErr(q), nil
	}
	if q.Class != DNSClassIN {
		return BuildDNSResponse(q, DNSRcodeNotImpl, nil, 0)
	}
	addrs, ok := z.Records[q.Name]
	if !ok {
		return BuildDNSResponse(q, DNSRcodeNXDomain, nil, 0)
	}
	return BuildDNSResponse(q, DNSRcodeOK, addrs, 5)
}

func formErr(q DNSQuestion) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint16(b[0:], q.ID)
	binary.BigEndian.PutUint16(b[2:], 0x8000|(q.Flags&0x0100)|DNSRcodeFormErr)
	return b
}
