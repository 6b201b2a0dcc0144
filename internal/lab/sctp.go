package lab

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SCTP chunk types the lab uses.
const (
	sctpChunkInit = 1
	sctpHeaderLen = 12
	sctpInitLen   = 20
)

// SCTPInit encodes an SCTP packet (common header plus one INIT chunk, RFC
// 9260 sections 3.1 and 3.3.2) to be sent on a raw IP protocol-132 socket.
// The common header's verification tag is 0, as INIT requires; tag is the
// Initiate Tag, which the lab uses to recognise its probe at the receiver.
// The checksum is CRC32c over the whole packet with the checksum field
// zero, stored least significant byte first as RFC 9260 appendix A and
// Linux do.
func SCTPInit(srcPort, dstPort uint16, tag uint32) []byte {
	b := make([]byte, sctpHeaderLen+sctpInitLen)
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	// b[4:8] verification tag = 0; b[8:12] checksum, filled below.
	c := b[sctpHeaderLen:]
	c[0] = sctpChunkInit
	c[1] = 0 // flags
	binary.BigEndian.PutUint16(c[2:], sctpInitLen)
	binary.BigEndian.PutUint32(c[4:], tag)    // initiate tag
	binary.BigEndian.PutUint32(c[8:], 65535)  // a_rwnd
	binary.BigEndian.PutUint16(c[12:], 1)     // outbound streams
	binary.BigEndian.PutUint16(c[14:], 1)     // inbound streams
	binary.BigEndian.PutUint32(c[16:], tag^1) // initial TSN
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, castagnoli))
	return b
}

// SCTPInitInfo is what ParseSCTPInit extracts.
type SCTPInitInfo struct {
	SrcPort, DstPort uint16
	Tag              uint32
}

// ParseSCTPInit decodes an SCTP packet whose first chunk is INIT and
// checks its CRC32c checksum.
func ParseSCTPInit(b []byte) (SCTPInitInfo, error) {
	if len(b) < sctpHeaderLen+sctpInitLen {
		return SCTPInitInfo{}, errors.New("sctp: packet too short for an INIT")
	}
	want := binary.LittleEndian.Uint32(b[8:])
	cp := append([]byte(nil), b...)
	cp[8], cp[9], cp[10], cp[11] = 0, 0, 0, 0
	if got := crc32.Checksum(cp, castagnoli); got != want {
		return SCTPInitInfo{}, errors.New("sctp: bad checksum")
	}
	c := b[sctpHeaderLen:]
	if c[0] != sctpChunkInit {
		return SCTPInitInfo{}, errors.New("sctp: first chunk is not INIT")
	}
	return SCTPInitInfo{
		SrcPort: binary.BigEndian.Uint16(b[0:]),
		DstPort: binary.BigEndian.Uint16(b[2:]),
		Tag:     binary.BigEndian.Uint32(c[4:]),
	}, nil
}

// stripIPv4Header returns the payload of a packet read from an AF_INET raw
// socket (which includes the IPv4 header).
func stripIPv4Header(b []byte) ([]byte, error) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return nil, errors.New("not an IPv4 packet")
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return nil, errors.New("bad IPv4 header length")
	}
	return b[ihl:], nil
}
