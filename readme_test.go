package kitnats_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestREADMESnippetsBuild compiles every Go program in README.md against
// the module as it is: a ```go block that starts with "package main" is a
// whole program, built as one. The README's wiring can then never name
// something the library no longer has.
func TestREADMESnippetsBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds programs with the go command")
	}
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	programs := goPrograms(string(b))
	if len(programs) < 3 {
		t.Fatalf("README.md has %d Go programs; its wiring sections should each be one", len(programs))
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the README's programs: %v", err)
	}
	// Inside the module, so that its packages and go.mod's versions are used;
	// a name starting with '_' keeps it out of ./... patterns.
	dir, err := os.MkdirTemp(".", "_readme")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var pkgs []string
	for i, p := range programs {
		sub := filepath.Join(dir, "p"+strconv.Itoa(i))
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "main.go"), []byte(p.text), 0o644); err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, "./"+filepath.ToSlash(sub))
	}
	cmd := exec.Command(gobin, append([]string{"vet"}, pkgs...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		var where []string
		for i, p := range programs {
			where = append(where, "p"+strconv.Itoa(i)+" = README.md:"+strconv.Itoa(p.line))
		}
		t.Fatalf("README programs do not build (%s):\n%s", strings.Join(where, ", "), out)
	}
}

type program struct {
	line int
	text string
}

func goPrograms(md string) []program {
	var out []program
	lines := strings.Split(md, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		start := i + 1
		j := start
		for j < len(lines) && strings.TrimSpace(lines[j]) != "```" {
			j++
		}
		body := strings.Join(lines[start:j], "\n")
		if strings.HasPrefix(strings.TrimSpace(body), "package main") {
			out = append(out, program{line: start + 1, text: body + "\n"})
		}
		i = j
	}
	return out
}
