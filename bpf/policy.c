//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Bulkhead per-endpoint policy for tc (TCX or clsact) on the node-side
// interface of a pod. The Go side (dataplane/ebpf) compiles the whole tier
// walk of every chain into two lookups:
//
//   remote address -> identity                 (LPM trie ident_N)
//   (ifindex, identity, dir) -> class          (hash cls_N; a miss is class 0)
//   (ifindex, class, dir, proto, port prefix) -> verdict   (LPM trie pol_N)
//
// A class groups the identities that one chain cannot tell apart (equal
// membership in the sets the chain's rules name), so the policy trie grows
// with the rules, not with endpoints times identities.
//
// N is the active buffer named by config[0].active; the Go side writes the
// inactive buffer completely, then flips the index, so a packet never sees
// a half-written policy. A miss in pol_N is the default allow.
//
// New connections create an entry in the conntrack map ct (LRU hash) and
// emit one ring-buffer event; packets of known connections (both
// directions) pass on the conntrack entry alone. Drops emit at most one
// event per tuple and second.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// TCX return codes (linux/bpf.h of 6.6+); equal to TC_ACT_UNSPEC and
// TC_ACT_SHOT, so one program serves TCX and clsact.
#define VERDICT_NEXT (-1)
#define VERDICT_DROP 2

// Chain directions, as ir.Direction.
#define DIR_INGRESS 0 // to the pod: the tc egress hook of the node-side veth
#define DIR_EGRESS 1  // from the pod: the tc ingress hook

#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_SCTP 132
#define PROTO_ICMPV6 58

// verdict.flags
#define VF_DENY 1
#define VF_AUDIT 2
#define VF_LOG 4

// ct_val.flags
#define CT_AUDITED 1
#define CT_CLOSING 2
#define CT_REPLIED 4 // a packet of the other direction passed

// event.kind
#define EV_NEW 1
#define EV_DROP 2

// event.flags
#define EVF_AUDITED 1
#define EVF_V6 2

// config.flags
#define CFG_EVENTS_NEW 1
#define CFG_EVENTS_DROP 2
#define CFG_SVC 4 // Service ranges configured: svc_cidr, local_ep

#define SEC_NS 1000000000ULL
#define CT_TIMEOUT_TCP (6 * 3600 * SEC_NS)
#define CT_TIMEOUT_TCP_CLOSING (10 * SEC_NS)
#define CT_TIMEOUT_OTHER (120 * SEC_NS)
#define DROP_EVENT_INTERVAL SEC_NS
// The established path moves ct_val.seen only when it is this old: the
// timeouts are 10 s and more.
#define CT_SEEN_STEP SEC_NS
// ct_val.packets and bytes are exact up to this many packets, then
// sampled: see count_packet. CT_SAMPLE_EVERY is a power of 2.
#define CT_EXACT_PACKETS 64
#define CT_SAMPLE_EVERY 64

struct config {
	__u32 active;
	__u32 flags;
};

struct ident_key {
	__u32 prefixlen; // 8 + address prefix length
	__u8 family;     // 4 or 6: no IPv6 prefix covers an IPv4 address
	__u8 addr[16];   // IPv4 in the first 4 bytes
	__u8 pad[3];
};

struct cls_key {
	__u32 ifindex;
	__u32 identity;
	__u8 dir;
	__u8 pad[3];
};

struct pol_key {
	__u32 prefixlen; // 80 fixed bits + port prefix bits
	__u32 ifindex;
	__u32 class;
	__u8 dir;
	__u8 proto; // TCP, UDP, SCTP; 0 for every other protocol
	__be16 port;
};

struct verdict {
	__u32 rule; // index into the Go side's rule table; 0: default
	__u8 flags;
	__u8 tier;
	__u8 pad[2];
};

struct ct_key {
	__u32 ifindex;
	__u8 local[16];
	__u8 remote[16];
	__be16 lport;
	__be16 rport;
	__u8 proto;
	__u8 pad[3];
};

struct ct_val {
	__u64 created;
	__u64 seen;
	__u64 packets;
	__u64 bytes;
	__u32 rule;
	__u32 identity;
	__u8 origin; // chain direction of the first packet
	__u8 flags;
	__u8 tier;
	__u8 pad[5];
};

struct event {
	__u64 ts;
	__u32 ifindex;
	__u32 rule;
	__u32 identity;
	__u8 kind;
	__u8 dir;
	__u8 proto;
	__u8 tier;
	__u8 flags;
	__u8 pad[3];
	__be16 sport;
	__be16 dport;
	__u8 src[16];
	__u8 dst[16];
};

// counters, per CPU
#define STAT_EVENTS_LOST 0
#define STAT_NEW 1
#define STAT_DROP 2
#define STAT_MAX 4

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} config_map SEC(".maps");

#define IDENT_MAX (1 << 18)
#define POL_MAX (1 << 20)

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, IDENT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ident_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ident0 SEC(".maps"), ident1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, POL_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pol_key);
	__type(value, struct verdict);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pol0 SEC(".maps"), pol1 SEC(".maps");

#define CLS_MAX (1 << 18)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, CLS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cls_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cls0 SEC(".maps"), cls1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct ct_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ct SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct ct_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} drop_seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__type(value, struct event);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

// Services. A packet from a pod to an address in svc_cidr (a Service
// ClusterIP range) is not judged where it leaves the pod: netfilter's
// DNAT has not chosen the backend yet. from_pod records the pre-DNAT
// destination in svc_pend and lets it go; the post-DNAT point (to_pod of
// a local backend's interface, or svc_out on an uplink) finds the record
// by the sender's address and port, judges the sender's egress chain with
// the backend as the peer, and creates the sender's conntrack entry under
// the pre-DNAT tuple, so the sender's later packets and the un-NATed
// replies (source: the ClusterIP) pass on it. svc_ct keeps the backend of
// such an entry for revocation and flow records.

struct svc_pend_key {
	__u32 ifindex; // the sender's interface
	__u8 addr[16]; // the sender's address
	__be16 port;   // the sender's port
	__u8 proto;
	__u8 pad;
};

struct svc_dst {
	__u8 addr[16];
	__be16 port;
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ident_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_cidr SEC(".maps");

// local_ep: address of a local endpoint -> its node-side interface.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ident_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_ep SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct svc_pend_key);
	__type(value, struct svc_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_pend SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ct_key);
	__type(value, struct svc_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} svc_ct SEC(".maps");

struct pkt {
	__u8 src[16];
	__u8 dst[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 v6;
	__u8 pass; // never judged (IPv6 neighbour discovery)
};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&stats, &idx);
	if (c)
		*c += 1;
}

// count_packet adds a packet of len bytes to an entry's counters: exactly
// for the first CT_EXACT_PACKETS packets, then one packet in
// CT_SAMPLE_EVERY (chosen at random) adds CT_SAMPLE_EVERY packets and as
// many times its length, an unbiased estimate that spares the entry a
// write on most packets.
static __always_inline void count_packet(struct ct_val *c, __u32 len)
{
	if (c->packets < CT_EXACT_PACKETS) {
		__sync_fetch_and_add(&c->packets, 1);
		__sync_fetch_and_add(&c->bytes, len);
		return;
	}
	if (bpf_get_prandom_u32() & (CT_SAMPLE_EVERY - 1))
		return;
	__sync_fetch_and_add(&c->packets, CT_SAMPLE_EVERY);
	__sync_fetch_and_add(&c->bytes, (__u64)len * CT_SAMPLE_EVERY);
}

static __always_inline void map4(__u8 *out, __be32 a)
{
	__builtin_memset(out, 0, 10);
	out[10] = 0xff;
	out[11] = 0xff;
	__builtin_memcpy(out + 12, &a, 4);
}

static __always_inline int is_mapped4(const __u8 *a)
{
	__u64 hi;
	__u32 mid;
	__builtin_memcpy(&hi, a, 8);
	__builtin_memcpy(&mid, a + 8, 4);
	return hi == 0 && mid == bpf_htonl(0x0000ffff);
}

// addr_key fills an identity-trie key for a full address (IPv4-mapped
// addresses as IPv4).
static __always_inline void addr_key(struct ident_key *ik, const __u8 *a)
{
	__builtin_memset(ik, 0, sizeof(*ik));
	if (is_mapped4(a)) {
		ik->family = 4;
		ik->prefixlen = 8 + 32;
		__builtin_memcpy(ik->addr, a + 12, 4);
	} else {
		ik->family = 6;
		ik->prefixlen = 8 + 128;
		__builtin_memcpy(ik->addr, a, 16);
	}
}

static __always_inline int svc_on(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	return cfg && (cfg->flags & CFG_SVC);
}

static __always_inline int in_svc(const __u8 *a)
{
	struct ident_key ik;
	addr_key(&ik, a);
	return bpf_map_lookup_elem(&svc_cidr, &ik) != 0;
}

// parse_direct is parse for the common packets, read in place: IPv4
// without options or fragmentation and IPv6 without extension headers,
// with the headers in the linear part of the skb. It returns 2 for every
// other packet, which parse_slow reads with bpf_skb_load_bytes.
static __always_inline int parse_direct(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	void *l4;
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > end)
			return 2;
		if (ip->ihl != 5 || (ip->frag_off & bpf_htons(0x1fff)))
			return 2;
		map4(p->src, ip->saddr);
		map4(p->dst, ip->daddr);
		proto = ip->protocol;
		l4 = ip + 1;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > end)
			return 2;
		proto = ip6->nexthdr;
		if (proto == 0 || proto == 43 || proto == 60 || proto == 44)
			return 2;
		__builtin_memcpy(p->src, &ip6->saddr, 16);
		__builtin_memcpy(p->dst, &ip6->daddr, 16);
		p->v6 = 1;
		l4 = ip6 + 1;
	} else {
		return 1;
	}
	p->proto = proto;
	switch (proto) {
	case PROTO_TCP: {
		__u8 *h = l4;
		if ((void *)(h + 14) > end)
			return 2;
		__builtin_memcpy(&p->sport, h, 2);
		__builtin_memcpy(&p->dport, h + 2, 2);
		p->tcp_flags = h[13];
		break;
	}
	case PROTO_UDP:
	case PROTO_SCTP: {
		__be16 *ports = l4;
		if ((void *)(ports + 2) > end)
			return 2;
		p->sport = ports[0];
		p->dport = ports[1];
		break;
	}
	case PROTO_ICMPV6: {
		__u8 *type = l4;
		if ((void *)(type + 1) > end)
			return 2;
		if ((*type >= 130 && *type <= 137) || *type == 143)
			return 1;
		break;
	}
	}
	return 0;
}

// parse_slow is parse with bpf_skb_load_bytes, for every shape of packet.
static __always_inline int parse_slow(struct __sk_buff *skb, struct pkt *p)
{
	__u32 off = ETH_HLEN;
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return -1;
		if (ip.ihl < 5)
			return -1;
		map4(p->src, ip.saddr);
		map4(p->dst, ip.daddr);
		proto = ip.protocol;
		// Non-first fragments carry no ports: judge them as port 0.
		if (ip.frag_off & bpf_htons(0x1fff)) {
			p->proto = proto;
			return 0;
		}
		off += ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(p->src, &ip6.saddr, 16);
		__builtin_memcpy(p->dst, &ip6.daddr, 16);
		p->v6 = 1;
		proto = ip6.nexthdr;
		off += sizeof(ip6);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			__u8 hdr[2];
			if (proto != 0 && proto != 43 && proto != 60 && proto != 44)
				break;
			if (bpf_skb_load_bytes(skb, off, hdr, 2) < 0)
				return -1;
			if (proto == 44) { // fragment header
				__be16 fo;
				if (bpf_skb_load_bytes(skb, off + 2, &fo, 2) < 0)
					return -1;
				proto = hdr[0];
				off += 8;
				if (fo & bpf_htons(0xfff8)) {
					p->proto = proto;
					return 0;
				}
				continue;
			}
			proto = hdr[0];
			off += (hdr[1] + 1) * 8;
		}
	} else {
		return 1;
	}
	p->proto = proto;
	switch (proto) {
	case PROTO_TCP: {
		__u8 h[14];
		if (bpf_skb_load_bytes(skb, off, h, sizeof(h)) < 0)
			return -1;
		__builtin_memcpy(&p->sport, h, 2);
		__builtin_memcpy(&p->dport, h + 2, 2);
		p->tcp_flags = h[13];
		break;
	}
	case PROTO_UDP:
	case PROTO_SCTP: {
		__be16 ports[2];
		if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)) < 0)
			return -1;
		p->sport = ports[0];
		p->dport = ports[1];
		break;
	}
	case PROTO_ICMPV6: {
		__u8 type;
		if (bpf_skb_load_bytes(skb, off, &type, 1) < 0)
			return -1;
		// Multicast listener, router and neighbour discovery keep
		// the link alive.
		if ((type >= 130 && type <= 137) || type == 143)
			return 1;
		break;
	}
	}
	return 0;
}

// parse fills p; it returns 0 for IP packets worth judging, 1 to let the
// packet go unjudged, -1 on a malformed packet (dropped).
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	int r = parse_direct(skb, p);
	if (r != 2)
		return r;
	__builtin_memset(p, 0, sizeof(*p));
	return parse_slow(skb, p);
}

static __always_inline void emit(__u32 ifindex, struct pkt *p, __u8 kind, __u8 dir,
				 struct verdict *v, __u32 identity, __u8 audited)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(STAT_EVENTS_LOST);
		return;
	}
	e->ts = bpf_ktime_get_ns();
	e->ifindex = ifindex;
	e->rule = v ? v->rule : 0;
	e->tier = v ? v->tier : 3;
	e->identity = identity;
	e->kind = kind;
	e->dir = dir;
	e->proto = p->proto;
	e->flags = (audited ? EVF_AUDITED : 0) | (p->v6 ? EVF_V6 : 0);
	e->pad[0] = 0;
	e->pad[1] = 0;
	e->pad[2] = 0;
	e->sport = p->sport;
	e->dport = p->dport;
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline int judge(struct __sk_buff *skb, struct pkt *pp, struct ct_key *kp, __u8 dir,
				 struct ct_val *c, int fresh, int syn, __u64 now, struct svc_dst *svc);

// handle judges a parsed packet p (parse returned 0) on the chain of dir.
static __always_inline int handle(struct __sk_buff *skb, __u8 dir, struct pkt *pp)
{
	struct ct_key k = {};
	k.ifindex = skb->ifindex;
	k.proto = pp->proto;
	if (dir == DIR_EGRESS) {
		__builtin_memcpy(k.local, pp->src, 16);
		__builtin_memcpy(k.remote, pp->dst, 16);
		k.lport = pp->sport;
		k.rport = pp->dport;
	} else {
		__builtin_memcpy(k.local, pp->dst, 16);
		__builtin_memcpy(k.remote, pp->src, 16);
		k.lport = pp->dport;
		k.rport = pp->sport;
	}

	__u64 now = bpf_ktime_get_ns();
	int tcp = pp->proto == PROTO_TCP;
	int syn = tcp && (pp->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	struct ct_val *c = bpf_map_lookup_elem(&ct, &k);
	int fresh = 0; // a live entry: a SYN on it is a retransmission
	if (c) {
		__u64 timeout = CT_TIMEOUT_OTHER;
		if (tcp)
			timeout = (c->flags & CT_CLOSING) ? CT_TIMEOUT_TCP_CLOSING : CT_TIMEOUT_TCP;
		__u64 seen = c->seen;
		__u64 idle = now > seen ? now - seen : 0;
		fresh = idle < timeout && !(c->flags & CT_CLOSING);
		if (!syn && idle < timeout) {
			// The established path writes the entry, which both
			// directions share, as rarely as it can: seen moves
			// once a second, the counters are exact for the first
			// CT_EXACT_PACKETS packets and sampled after that, the
			// flags change once.
			if (idle >= CT_SEEN_STEP)
				c->seen = now;
			count_packet(c, skb->len);
			if (tcp && (pp->tcp_flags & (TCP_FIN | TCP_RST)) && !(c->flags & CT_CLOSING)) {
				c->flags |= CT_CLOSING;
				c->seen = now;
			}
			if (dir != c->origin && !(c->flags & CT_REPLIED))
				c->flags |= CT_REPLIED;
			return VERDICT_NEXT;
		}
	}

	// A new connection (or a SYN, which is judged again whether or not
	// the tuple is known). To a Service address it is judged after DNAT.
	if (dir == DIR_EGRESS && svc_on() && in_svc(k.remote)) {
		struct svc_pend_key pk = { .ifindex = k.ifindex, .port = k.lport, .proto = k.proto };
		struct svc_dst sd = { .port = k.rport };
		__builtin_memcpy(pk.addr, k.local, 16);
		__builtin_memcpy(sd.addr, k.remote, 16);
		bpf_map_update_elem(&svc_pend, &pk, &sd, BPF_ANY);
		return VERDICT_NEXT;
	}
	return judge(skb, pp, &k, dir, c, fresh, syn, now, 0);
}

// judge decides a new connection by the active policy buffer: k is the
// conntrack key of the chain's interface, remote and port name the peer
// (for a Service connection the backend, while k holds the pre-DNAT
// tuple), c and fresh describe an existing entry of k.
static __always_inline int judge(struct __sk_buff *skb, struct pkt *pp, struct ct_key *kp, __u8 dir,
				 struct ct_val *c, int fresh, int syn, __u64 now, struct svc_dst *svc)
{
	struct pkt p = *pp;
	struct ct_key k = *kp;
	int tcp = p.proto == PROTO_TCP;
	__u8 remote[16];
	__be16 port = dir == DIR_EGRESS ? k.rport : k.lport;
	__builtin_memcpy(remote, k.remote, 16);
	if (svc) {
		__builtin_memcpy(remote, svc->addr, 16);
		port = svc->port;
	}
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	__u32 active = cfg ? cfg->active : 0;
	__u32 cflags = cfg ? cfg->flags : 0;

	struct ident_key ik;
	addr_key(&ik, remote);
	__u32 *idp;
	if (active)
		idp = bpf_map_lookup_elem(&ident1, &ik);
	else
		idp = bpf_map_lookup_elem(&ident0, &ik);
	__u32 identity = idp ? *idp : 0;

	struct cls_key ck = { .ifindex = k.ifindex, .identity = identity, .dir = dir };
	__u32 *clsp;
	if (active)
		clsp = bpf_map_lookup_elem(&cls1, &ck);
	else
		clsp = bpf_map_lookup_elem(&cls0, &ck);

	struct pol_key pk = { .prefixlen = 96, .ifindex = k.ifindex, .class = clsp ? *clsp : 0, .dir = dir };
	switch (p.proto) {
	case PROTO_TCP:
	case PROTO_UDP:
	case PROTO_SCTP:
		pk.proto = p.proto;
		pk.port = port;
		break;
	default:
		pk.proto = 0;
		pk.port = 0;
	}
	struct verdict *v;
	if (active)
		v = bpf_map_lookup_elem(&pol1, &pk);
	else
		v = bpf_map_lookup_elem(&pol0, &pk);

	__u8 vflags = v ? v->flags : 0;
	__u8 audited = (vflags & VF_AUDIT) ? 1 : 0;
	if (vflags & VF_DENY) {
		count(STAT_DROP);
		if (cflags & CFG_EVENTS_DROP) {
			__u64 *last = bpf_map_lookup_elem(&drop_seen, &k);
			if (!last || now - *last >= DROP_EVENT_INTERVAL) {
				bpf_map_update_elem(&drop_seen, &k, &now, BPF_ANY);
				emit(k.ifindex, &p, EV_DROP, dir, v, identity, audited);
			}
		}
		return VERDICT_DROP;
	}
	// Only a TCP SYN or a packet of another protocol opens a connection;
	// a TCP packet of an unknown connection is judged but not tracked.
	if (tcp && !syn)
		return VERDICT_NEXT;

	// A retransmitted SYN of a live entry with the same verdict changes
	// nothing and reports nothing.
	if (fresh && c && c->rule == (v ? v->rule : 0) && (c->flags & CT_AUDITED) == (audited ? CT_AUDITED : 0))
		return VERDICT_NEXT;

	struct ct_val nc = {};
	nc.created = now;
	nc.seen = now;
	nc.packets = 1;
	nc.bytes = skb->len;
	nc.rule = v ? v->rule : 0;
	nc.tier = v ? v->tier : 3;
	nc.identity = identity;
	nc.origin = dir;
	nc.flags = audited ? CT_AUDITED : 0;
	bpf_map_update_elem(&ct, &k, &nc, BPF_ANY);
	if (svc)
		bpf_map_update_elem(&svc_ct, &k, svc, BPF_ANY);
	count(STAT_NEW);
	if (cflags & CFG_EVENTS_NEW)
		emit(k.ifindex, &p, EV_NEW, dir, v, identity, audited);
	return VERDICT_NEXT;
}

// svc_judge runs where packets have passed netfilter's DNAT. A packet
// from a local endpoint with a pending Service record is judged by that
// endpoint's egress chain with its real (post-DNAT) destination; it
// returns VERDICT_DROP, or VERDICT_NEXT to go on.
static __always_inline int svc_judge(struct __sk_buff *skb, struct pkt *p)
{
	struct ident_key ik;
	addr_key(&ik, p->src);
	__u32 *cif = bpf_map_lookup_elem(&local_ep, &ik);
	if (!cif)
		return VERDICT_NEXT;
	struct svc_pend_key pk = { .ifindex = *cif, .port = p->sport, .proto = p->proto };
	__builtin_memcpy(pk.addr, p->src, 16);
	struct svc_dst *pend = bpf_map_lookup_elem(&svc_pend, &pk);
	if (!pend)
		return VERDICT_NEXT;
	struct svc_dst orig = *pend;
	bpf_map_delete_elem(&svc_pend, &pk);

	// The sender's conntrack key holds the pre-DNAT tuple.
	struct ct_key k = { .ifindex = *cif, .proto = p->proto, .lport = p->sport, .rport = orig.port };
	__builtin_memcpy(k.local, p->src, 16);
	__builtin_memcpy(k.remote, orig.addr, 16);
	struct svc_dst backend = { .port = p->dport };
	__builtin_memcpy(backend.addr, p->dst, 16);
	__u64 now = bpf_ktime_get_ns();
	int syn = p->proto == PROTO_TCP && (p->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
	struct ct_val *c = bpf_map_lookup_elem(&ct, &k);
	int fresh = c && !(c->flags & CT_CLOSING);
	return judge(skb, p, &k, DIR_EGRESS, c, fresh, syn, now, &backend);
}

// svc_pending judges a pending Service connection, when the node has
// Service ranges configured.
static __always_inline int svc_pending(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config_map, &zero);
	if (!cfg || !(cfg->flags & CFG_SVC))
		return VERDICT_NEXT;
	struct pkt p = {};
	if (parse(skb, &p) != 0)
		return VERDICT_NEXT;
	return svc_judge(skb, &p);
}

// from_pod runs on the tc ingress hook of the node-side interface: the
// pod's egress.
SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = parse(skb, &p);
	if (r < 0)
		return VERDICT_DROP;
	if (r > 0)
		return VERDICT_NEXT;
	return handle(skb, DIR_EGRESS, &p);
}

// to_pod runs on the tc egress hook of the node-side interface: the pod's
// ingress. A pending Service connection of the sender is judged first,
// on the same parse.
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct pkt p = {};
	int r = parse(skb, &p);
	if (r < 0)
		return VERDICT_DROP;
	if (r > 0)
		return VERDICT_NEXT;
	if (svc_on() && svc_judge(skb, &p) == VERDICT_DROP)
		return VERDICT_DROP;
	return handle(skb, DIR_INGRESS, &p);
}

// svc_out runs on the tc egress hook of the node's uplinks: there it
// judges Service connections of local endpoints to remote backends.
SEC("tc")
int svc_out(struct __sk_buff *skb)
{
	return svc_pending(skb);
}

char __license[] SEC("license") = "Dual BSD/GPL";
