package suggest

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bulkhead-dev/bulkhead/api/v1alpha1"
	"github.com/bulkhead-dev/bulkhead/internal/attrib"
)

// maxSubsets bounds the exhaustive search for the smallest exact label
// set; beyond it, all stable labels are tried.
const maxSubsets = 4096

// selector returns the smallest set of w's stable labels that selects, among
// the live pods of w's namespace, exactly w's pods. Labels are those every
// live pod of w carries (or the edge's labels when w has no live pod).
func (s *state) selector(w *v1alpha1.WorkloadRef) (*metav1.LabelSelector, error) {
	own := s.wpods[wkey(w.Namespace, w.Kind, w.Name)]
	var labels map[string]string
	if len(own) == 0 {
		labels = attrib.StableLabels(w.Labels)
	} else {
		labels = attrib.StableLabels(own[0].Labels)
		for _, p := range own[1:] {
			for k, v := range labels {
				if p.Labels[k] != v {
					delete(labels, k)
				}
			}
		}
	}
	if len(labels) == 0 {
		return nil, errors.New("its pods share no stable label to select them by")
	}
	var others []*Pod
	for _, p := range s.pods[w.Namespace] {
		if p.WorkloadKind != w.Kind || p.WorkloadName != w.Name {
			others = append(others, p)
		}
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	exact := func(set []string) bool {
		for _, p := range others {
			all := true
			for _, k := range set {
				if p.Labels[k] != labels[k] {
					all = false
					break
				}
			}
			if all {
				return false
			}
		}
		return true
	}
	build := func(set []string) *metav1.LabelSelector {
		m := map[string]string{}
		for _, k := range set {
			m[k] = labels[k]
		}
		return &metav1.LabelSelector{MatchLabels: m}
	}
	tried := 0
	for size := 1; size <= len(keys) && tried < maxSubsets; size++ {
		var found []string
		combinations(len(keys), size, func(idx []int) bool {
			tried++
			set := make([]string, len(idx))
			for i, j := range idx {
				set[i] = keys[j]
			}
			if exact(set) {
				found = set
				return false
			}
			return tried < maxSubsets
		})
		if found != nil {
			return build(found), nil
		}
	}
	if exact(keys) {
		return build(keys), nil
	}
	var clash []string
	for _, p := range others {
		match := true
		for _, k := range keys {
			if p.Labels[k] != labels[k] {
				match = false
			}
		}
		if match {
			clash = append(clash, p.Namespace+"/"+p.Name)
		}
	}
	sort.Strings(clash)
	if len(clash) > 3 {
		clash = append(clash[:3], "…")
	}
	return nil, fmt.Errorf("its stable labels also select pods of other workloads (%s)", strings.Join(clash, ", "))
}

// combinations calls fn with every size-k subset of 0..n-1 in
// lexicographic order until fn returns false.
func combinations(n, k int, fn func([]int) bool) {
	idx := make([]int, k)
	for i := range idx {
		idx[i] = i
	}
	for {
		if !fn(idx) {
			return
		}
		i := k - 1
		for i >= 0 && idx[i] == n-k+i {
			i--
		}
		if i < 0 {
			return
		}
		idx[i]++
		for j := i + 1; j < k; j++ {
			idx[j] = idx[j-1] + 1
		}
	}
}
