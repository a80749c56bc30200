// Tokenizes .net files with editors/textmate/netdsl.tmLanguage.json through vscode-textmate and
// vscode-oniguruma (the tokenizer VS Code uses) and prints, as JSON, every token of every file:
// {"path": [[line, start, end, text, [scopes...]], ...], ...} (0-based lines, end exclusive).
// Usage: node tokenize.js FILE.net...
"use strict";
const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const GRAMMAR = path.join(__dirname, "..", "..", "editors", "textmate", "netdsl.tmLanguage.json");
const wasm = fs.readFileSync(path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm"));

async function main() {
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (sources) => new oniguruma.OnigScanner(sources),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) =>
      scopeName === "source.netdsl" ? vsctm.parseRawGrammar(fs.readFileSync(GRAMMAR, "utf8"), GRAMMAR) : null,
  });
  const grammar = await registry.loadGrammar("source.netdsl");
  const out = {};
  for (const file of process.argv.slice(2)) {
    const tokens = [];
    let state = vsctm.INITIAL;
    fs.readFileSync(file, "utf8").split(/\r?\n/).forEach((line, i) => {
      const r = grammar.tokenizeLine(line, state);
      for (const t of r.tokens) {
        const end = Math.min(t.endIndex, line.length);
        if (end > t.startIndex) tokens.push([i, t.startIndex, end, line.slice(t.startIndex, end), t.scopes]);
      }
      state = r.ruleStack;
    });
    out[file] = tokens;
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
