package kitnats_test

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/aegis-sdk/kitnats"

// TestDesignPackageTable holds the import graph to docs/DESIGN.md's package
// table: every package of the module has a row, and every import a package
// makes — of this module or from outside the standard library — is named in
// its row's "depends on" column. A row whose column holds `*` (the command,
// the examples) may import anything. The table and the code cannot drift:
// a new edge fails here until the table allows it.
func TestDesignPackageTable(t *testing.T) {
	rules := readPackageTable(t, "docs/DESIGN.md")
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to read the import graph: %v", err)
	}
	out, err := exec.Command(gobin, "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var packages int
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], module), "/")
		if pkg == "" {
			pkg = "."
		}
		packages++
		allowed, ok := rules.lookup(pkg)
		if !ok {
			t.Errorf("package %s has no row in DESIGN.md's package table", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if isStandard(imp) || allowed.permits(imp) {
				continue
			}
			t.Errorf("%s imports %s, which its row in DESIGN.md's package table does not allow", pkg, imp)
		}
	}
	if packages < 10 {
		t.Fatalf("go list named %d packages; the graph was not read", packages)
	}
}

type allowance struct {
	any  bool
	deps []string // module-relative packages, or outside import paths
}

func (a allowance) permits(imp string) bool {
	if a.any {
		return true
	}
	for _, d := range a.deps {
		target := d
		if !strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
			target = module + "/" + d // a package of this module
		}
		if imp == target || strings.HasPrefix(imp, target+"/") && !strings.HasPrefix(target, module) {
			return true
		}
	}
	return false
}

type packageTable map[string]allowance

// lookup finds pkg's row: its own, or a row "dir/..." above it.
func (t packageTable) lookup(pkg string) (allowance, bool) {
	if a, ok := t[pkg]; ok {
		return a, true
	}
	for dir := pkg; dir != "." && dir != "/"; dir = path.Dir(dir) {
		if a, ok := t[dir+"/..."]; ok {
			return a, true
		}
	}
	return allowance{}, false
}

var backticked = regexp.MustCompile("`([^`]+)`")

func readPackageTable(t *testing.T, file string) packageTable {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Packages")
	if start < 0 {
		t.Fatalf("%s has no \"## Packages\" section", file)
	}
	section := text[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	table := packageTable{}
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		names := backticked.FindAllStringSubmatch(cells[1], -1)
		var a allowance
		for _, m := range backticked.FindAllStringSubmatch(cells[len(cells)-2], -1) {
			if m[1] == "*" {
				a.any = true
				continue
			}
			a.deps = append(a.deps, m[1])
		}
		for _, n := range names {
			table[strings.TrimSuffix(n[1], "/")] = a
		}
	}
	if len(table) == 0 {
		t.Fatalf("no rows read from %s's package table", file)
	}
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.Logf("package table rows: %s", strings.Join(keys, ", "))
	return table
}

func isStandard(imp string) bool {
	first := strings.SplitN(imp, "/", 2)[0]
	return !strings.Contains(first, ".")
}
