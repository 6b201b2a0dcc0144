// Command testsummary reads `go test -json` output on stdin, prints it the
// way `go test` does, and ends with a line "N passed, N failed, N skipped"
// counting individual tests. It exits non-zero when a test or a package
// failed, or when no test ran.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	var passed, failed, skipped int
	var failures, skips []string
	pkgFailed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// Not JSON: build errors and the like. Show them as they are.
			fmt.Println(sc.Text())
			continue
		}
		switch e.Action {
		case "output":
			fmt.Print(e.Output)
		case "pass":
			if e.Test != "" {
				passed++
			}
		case "fail":
			if e.Test != "" {
				failed++
				failures = append(failures, e.Package+"."+e.Test)
			} else {
				pkgFailed = true
			}
		case "skip":
			if e.Test != "" {
				skipped++
				skips = append(skips, e.Package+"."+e.Test)
			}
		}
	}
	sort.Strings(failures)
	sort.Strings(skips)
	fmt.Println()
	for _, s := range skips {
		fmt.Println("skipped:", s)
	}
	for _, f := range failures {
		fmt.Println("failed:", f)
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || pkgFailed || passed == 0 {
		os.Exit(1)
	}
}
