// Starts the nldsl language server (`nldsl lsp`, over stdio) for `.nl` files. Highlighting needs no
// code: it is the TextMate grammar in syntaxes/, generated from the Pygments lexer by generate.py.
"use strict";

const path = require("path");
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

// `nldsl.serverPath` as a command to spawn: a bare name is looked up on PATH; a relative path such as
// `.venv/bin/nldsl` is taken from the first workspace folder, where a project keeps its environment.
function serverCommand() {
  const configured = vscode.workspace.getConfiguration("nldsl").get("serverPath") || "nldsl";
  const folder = vscode.workspace.workspaceFolders?.[0];
  if (path.isAbsolute(configured) || !/[\\/]/.test(configured) || folder === undefined) {
    return configured;
  }
  return path.join(folder.uri.fsPath, configured);
}

async function startClient() {
  const command = serverCommand();
  // No `transport` on purpose: with `TransportKind.stdio` the client would append `--stdio` to the
  // arguments, and the server is exactly `nldsl lsp`, which always talks over stdin/stdout.
  const serverOptions = { command, args: ["lsp"] };
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "nl" },
      { scheme: "untitled", language: "nl" },
    ],
  };
  client = new LanguageClient("nldsl", "nldsl", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (error) {
    client = undefined;
    vscode.window.showErrorMessage(
      `nldsl: could not start \`${command} lsp\` (${error.message}). Install nldsl, or set ` +
      "`nldsl.serverPath` to its executable."
    );
  }
}

async function restartClient() {
  if (client !== undefined) {
    await client.stop();
    client = undefined;
  }
  await startClient();
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand("nldsl.restartServer", restartClient),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("nldsl.serverPath")) {
        restartClient();
      }
    })
  );
  await startClient();
}

function deactivate() {
  return client === undefined ? undefined : client.stop();
}

module.exports = { activate, deactivate };
