//go:build linux

package nftables

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func commentUserData(c string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, c)
}

// exprKinds names the expression types of a rule, so that a rule read
// back from the kernel can be compared with the one the backend wrote.
func exprKinds(es []expr.Any) string {
	var b strings.Builder
	for _, e := range es {
		switch v := e.(type) {
		case *expr.Verdict:
			fmt.Fprintf(&b, "verdict(%d,%s) ", v.Kind, v.Chain)
		case *expr.Lookup:
			fmt.Fprintf(&b, "lookup(%s,%v) ", v.SetName, v.Invert)
		case *expr.Cmp:
			fmt.Fprintf(&b, "cmp(%d,%x) ", v.Op, v.Data)
		case *expr.Range:
			fmt.Fprintf(&b, "range(%x,%x) ", v.FromData, v.ToData)
		case *expr.Payload:
			fmt.Fprintf(&b, "payload(%d,%d,%d>%d) ", v.Base, v.Offset, v.Len, v.DestRegister)
		case *expr.Meta:
			fmt.Fprintf(&b, "meta(%d>%d) ", v.Key, v.Register)
		case *expr.Log:
			fmt.Fprintf(&b, "log(%d,%s) ", v.Group, bytes.TrimRight(v.Data, "\x00"))
		default:
			fmt.Fprintf(&b, "%T ", e)
		}
	}
	return b.String()
}

// verifyLocked compares the kernel's table with st: chains, the rules of
// every chain (expression kinds, operands and comments), sets and their
// elements, and map elements.
func (b *Backend) verifyLocked(st *state) error {
	var errs []error
	chains, err := b.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("listing chains: %w", err)
	}
	have := map[string]bool{}
	for _, c := range chains {
		if c.Table.Name != b.opts.TableName {
			continue
		}
		have[c.Name] = true
		w, ok := st.chains[c.Name]
		if !ok {
			continue
		}
		if isBase := c.Hooknum != nil; isBase != w.base {
			errs = append(errs, fmt.Errorf("chain %s: base chain %v, want %v", c.Name, isBase, w.base))
			continue
		}
		if w.base {
			if c.Priority == nil || int32(*c.Priority) != w.prio || *c.Hooknum != *nftables.ChainHookForward {
				errs = append(errs, fmt.Errorf("chain %s: hook or priority changed", c.Name))
			}
			if c.Policy == nil || *c.Policy != nftables.ChainPolicyAccept {
				errs = append(errs, fmt.Errorf("chain %s: policy changed", c.Name))
			}
		}
	}
	for _, n := range sortedKeys(st.chains) {
		if !have[n] {
			errs = append(errs, fmt.Errorf("chain %s missing", n))
			continue
		}
		delete(have, n)
		rules, err := b.conn.GetRules(b.table, &nftables.Chain{Name: n, Table: b.table})
		if err != nil {
			errs = append(errs, fmt.Errorf("listing rules of chain %s: %w", n, err))
			continue
		}
		want := st.chains[n].rules
		if len(rules) != len(want) {
			errs = append(errs, fmt.Errorf("chain %s has %d rules, want %d", n, len(rules), len(want)))
			continue
		}
		for i, r := range rules {
			c, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if c != want[i].comment {
				errs = append(errs, fmt.Errorf("chain %s rule %d: comment %q, want %q", n, i, c, want[i].comment))
				continue
			}
			if g, w := exprKinds(r.Exprs), exprKinds(want[i].exprs); g != w {
				errs = append(errs, fmt.Errorf("chain %s rule %d: expressions %s, want %s", n, i, g, w))
			}
		}
	}
	for n := range have {
		errs = append(errs, fmt.Errorf("unexpected chain %s", n))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	sets, err := b.conn.GetSets(b.table)
	if err != nil {
		return fmt.Errorf("listing maps: %w", err)
	}
	hs := map[string]*nftables.Set{}
	for _, s := range sets {
		hs[s.Name] = s
	}
	for _, n := range sortedKeys(st.maps) {
		m := st.maps[n]
		ks, ok := hs[n]
		if !ok {
			errs = append(errs, fmt.Errorf("map %s missing", n))
			continue
		}
		delete(hs, n)
		els, err := b.conn.GetSetElements(ks)
		if err != nil {
			errs = append(errs, fmt.Errorf("listing elements of map %s: %w", n, err))
			continue
		}
		got := map[string]verdict{}
		for _, e := range els {
			v := elemVerdict(e)
			if m.logDrop != "" {
				v = verdict{}
				if len(e.Val) == 4 {
					v = loggedDrop(m.logDrop, binaryutil.BigEndian.Uint32(e.Val))
				}
			}
			got[elemID(mapElem{key: e.Key, keyEnd: e.KeyEnd})] = v
		}
		if len(got) != len(m.elems) {
			errs = append(errs, fmt.Errorf("map %s has %d elements, want %d", n, len(got), len(m.elems)))
			continue
		}
		bad := 0
		for k, e := range m.elems {
			if g, ok := got[k]; !ok || g != e.v {
				bad++
			}
		}
		if bad > 0 {
			errs = append(errs, fmt.Errorf("map %s: %d elements differ", n, bad))
		}
	}
	for n := range hs {
		errs = append(errs, fmt.Errorf("unexpected set %s", n))
	}
	return errors.Join(errs...)
}

// elemVerdict returns the verdict of a verdict map element. The library
// leaves the verdict attributes undecoded in Val.
func elemVerdict(e nftables.SetElement) verdict {
	if e.VerdictData != nil {
		return verdict{kind: e.VerdictData.Kind, chain: e.VerdictData.Chain}
	}
	var v verdict
	ad, err := netlink.NewAttributeDecoder(e.Val)
	if err != nil {
		return v
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_VERDICT_CODE:
			v.kind = expr.VerdictKind(int32(binary.BigEndian.Uint32(ad.Bytes())))
		case unix.NFTA_VERDICT_CHAIN:
			v.chain = strings.TrimRight(string(ad.Bytes()), "\x00")
		}
	}
	return v
}
