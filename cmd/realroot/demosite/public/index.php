<?php
// The demo's front controller: every request that names no file lands here.
require __DIR__ . '/../lib/release.php';
header('Content-Type: text/html; charset=utf-8');
$uri = htmlspecialchars($_SERVER['REQUEST_URI']);
?><!doctype html>
<title>realroot demo — release <?= RELEASE ?></title>
<link rel="stylesheet" href="/style.css">
<h1>Release <?= RELEASE ?></h1>
<table>
<tr><th>REQUEST_URI</th><td><?= $uri ?></td></tr>
<tr><th>SCRIPT_FILENAME</th><td><?= htmlspecialchars($_SERVER['SCRIPT_FILENAME']) ?></td></tr>
<tr><th>DOCUMENT_ROOT</th><td><?= htmlspecialchars($_SERVER['DOCUMENT_ROOT']) ?></td></tr>
<tr><th>__DIR__</th><td><?= htmlspecialchars(__DIR__) ?></td></tr>
<tr><th>lib from</th><td><?= htmlspecialchars(RELEASE_FILE) ?></td></tr>
</table>
<p>Switch releases with <code>realroot</code> running, and reload: the page follows at once.</p>
