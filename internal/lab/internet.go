package lab

import "net/netip"

// The "internet" stand-in: one lab namespace outside the pod and node
// ranges whose hosts play external peers (an API the app calls, an
// unknown address, a DNS server that is not kube-dns).
var (
	// InternetPrefix holds the internet hosts' addresses.
	InternetPrefix = netip.MustParsePrefix("10.251.0.0/24")
	// InternetFabricIP is the internet namespace's address on the node
	// fabric; nodes route InternetPrefix through it.
	InternetFabricIP = netip.MustParseAddr("10.250.0.254")
)

// InternetIdentity is what the internet's probe servers answer ("ok
// <identity>"), so a probe can tell it reached the internet.
const InternetIdentity = "internet/world"

const internetFabricDev = "inet0"

// InternetNetns names the lab's internet namespace.
func InternetNetns(lab string) string { return NetnsPrefix(lab) + "internet" }

// InternetHost is the k-th internet host address, 10.251.0.k (1..254).
func InternetHost(k int) netip.Addr { return netip.AddrFrom4([4]byte{10, 251, 0, byte(k)}) }

// InternetPlan is the internet stand-in of a running lab (EnableInternet).
type InternetPlan struct {
	Netns string       `json:"netns"`
	Hosts []netip.Addr `json:"hosts"`
}
