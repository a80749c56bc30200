// The netdsl extension: starts `netdsl lsp` (stdio) for .net files through vscode-languageclient.
"use strict";
const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("netdsl").get("server.command", ["netdsl", "lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient("netdsl", "netdsl language server", { run: server, debug: server }, {
    documentSelector: [{ scheme: "file", language: "netdsl" }, { scheme: "untitled", language: "netdsl" }],
  });
  context.subscriptions.push(client);
  return client.start().catch((err) => {
    vscode.window.showErrorMessage(
      `netdsl: could not start \`${[command, ...args].join(" ")}\` (${err.message}). ` +
      'Install the server with: pip install "netdsl[lsp]", or set netdsl.server.command.');
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
