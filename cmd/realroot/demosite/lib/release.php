<?php
// Written per release by `realroot demo`.
const RELEASE = '{{RELEASE}}';
const RELEASE_FILE = __FILE__;
