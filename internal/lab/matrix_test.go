package lab

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func cell(src, dst, proto string, port int, allowed bool, verdict string) Entry {
	return Entry{Src: src, Dst: dst, Protocol: proto, Port: port, Allowed: allowed, Verdict: verdict}
}

func TestCompareMatrices(t *testing.T) {
	base := []Entry{
		cell("a/x", "b/y", "TCP", 80, true, VerdictAllowed),
		cell("b/y", "a/x", "TCP", 80, false, VerdictDenied),
	}
	tests := []struct {
		name      string
		want, got []Entry
		wantDiffs []string // substrings; none means equal
	}{
		{"identical matrices agree", base, base, nil},
		{"order does not matter", base, []Entry{base[1], base[0]}, nil},
		{"an AUDIT verdict agrees with an allowed probe", []Entry{cell("a/x", "b/y", "TCP", 80, true, VerdictAudit), base[1]}, base, nil},
		{"a flipped cell is reported with both values", base,
			[]Entry{base[0], cell("b/y", "a/x", "TCP", 80, true, VerdictAllowed)},
			[]string{"differ in 1 cells", "b/y -> a/x TCP/80: want denied, got allowed (ALLOWED)"}},
		{"a cell missing from got is reported", base, base[:1],
			[]string{"b/y -> a/x TCP/80: missing from got (want allowed=false)"}},
		{"a cell only in got is reported", base[:1], base,
			[]string{"b/y -> a/x TCP/80: only in got (allowed=false)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := CompareMatrices(tt.want, tt.got)
			if len(tt.wantDiffs) == 0 {
				if d != "" {
					t.Fatalf("want agreement, got:\n%s", d)
				}
				return
			}
			for _, s := range tt.wantDiffs {
				if !strings.Contains(d, s) {
					t.Errorf("diff lacks %q:\n%s", s, d)
				}
			}
			if !strings.Contains(d, "want:\n") || !strings.Contains(d, "got:\n") {
				t.Errorf("diff does not print both matrices:\n%s", d)
			}
		})
	}
}

func TestMatrixJSONRoundTripAndOrder(t *testing.T) {
	es := []Entry{
		cell("b/y", "a/x", "UDP", 53, true, VerdictAllowed),
		cell("a/x", "b/y", "TCP", 80, false, VerdictDenied),
		cell("a/x", "b/y", "SCTP", 9000, true, VerdictAllowed),
		cell("a/x", "a/z", "TCP", 443, true, VerdictAllowed),
	}
	SortEntries(es)
	var order []string
	for _, e := range es {
		order = append(order, e.Dst+" "+e.Protocol)
	}
	if d := cmp.Diff([]string{"a/z TCP", "b/y SCTP", "b/y TCP", "a/x UDP"}, order); d != "" {
		t.Errorf("sorted by src, dst, protocol, port (-want +got):\n%s", d)
	}
	var buf bytes.Buffer
	if err := WriteJSON(&buf, es); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"src": "a/x"`) || !strings.Contains(buf.String(), `"verdict": "DENIED"`) {
		t.Errorf("JSON keys are not analyze's schema:\n%s", buf.String())
	}
	back, err := ParseMatrix(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(es, back); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if _, err := ParseMatrix(strings.NewReader(`[{"src":"a/x"}]`)); err == nil {
		t.Error("an entry without dst, protocol and port was accepted")
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	err := WriteTable(&buf, []Entry{
		cell("a/x", "b/y", "TCP", 80, true, VerdictAllowed),
		cell("a/x", "b/y", "UDP", 53, false, VerdictDenied),
		cell("b/y", "a/x", "TCP", 80, true, VerdictAudit),
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "SRC  DST  TCP/80  UDP/53\n" +
		"a/x  b/y  ok      -\n" +
		"b/y  a/x  audit   ?\n"
	if d := cmp.Diff(want, buf.String()); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}
