package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary act as the plugin when re-executed.
func TestMain(m *testing.M) {
	if os.Getenv("BULKHEAD_CNI_TEST_AS_PLUGIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func plugin(t *testing.T, env []string, stdin string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append([]string{"BULKHEAD_CNI_TEST_AS_PLUGIN=1"}, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		return o.String(), e.String(), xe.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), 0
}

func TestRefusedAddPrintsACNIErrorAndExitsNonZero(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "endpoint.sock")
	conf := `{"cniVersion":"1.0.0","name":"n","type":"bulkhead-cni","socket":"` + sock + `",` +
		`"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.6/24"}]}}`
	out, errOut, code := plugin(t, []string{"CNI_COMMAND=ADD", "CNI_ARGS=K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0"}, conf)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stdout %q stderr %q", code, out, errOut)
	}
	var e struct {
		CNIVersion string `json:"cniVersion"`
		Code       int    `json:"code"`
		Msg        string `json:"msg"`
		Details    string `json:"details"`
	}
	if err := json.Unmarshal([]byte(out), &e); err != nil {
		t.Fatalf("stdout %q is not a CNI error: %v", out, err)
	}
	if e.CNIVersion != "1.0.0" || e.Code != 11 || !strings.Contains(e.Msg, "shop/web-0") || !strings.Contains(e.Details, sock) {
		t.Errorf("CNI error %+v, want version 1.0.0, code 11, naming shop/web-0 and the socket", e)
	}
	if !strings.Contains(errOut, "shop/web-0") {
		t.Errorf("stderr %q does not name the pod", errOut)
	}
}

func TestVersionExitsZero(t *testing.T) {
	out, errOut, code := plugin(t, []string{"CNI_COMMAND=VERSION"}, "")
	if code != 0 || !strings.Contains(out, `"supportedVersions"`) {
		t.Errorf("VERSION: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
